"""The training loop of the proxy (nanoGPT style) and its optimizer.

Kept to one screen and free of per-step Python work beyond the unavoidable: batches arrive as
one pre-gathered ``[steps, batch, seq_len]`` tensor, the learning rate comes from a precomputed
table, and losses stay on the device until the loop ends (one host sync per call).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from mixagent.proxy.config import OptimizerSpec


def make_optimizer(model: torch.nn.Module, spec: OptimizerSpec) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices (embeddings, projections) and not on gains/biases.

    The fused implementation is used where torch offers it (CPU and CUDA in recent torch): one
    kernel for all parameters instead of a Python loop over them.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": spec.weight_decay},
        {"params": other, "weight_decay": 0.0},
    ]
    kwargs: dict[str, Any] = {"lr": 0.0, "betas": tuple(spec.betas), "eps": spec.eps}
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # fused not available for this device/dtype
        return torch.optim.AdamW(groups, foreach=True, **kwargs)


def lm_loss(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of ``[batch, seq_len]`` token ids."""
    logits = model(input_ids=tokens[:, :-1], use_cache=False).logits
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))


def train_steps(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: torch.Tensor,
    lrs: Sequence[float],
    grad_clip: float | None,
    loss_fn: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] = lm_loss,
) -> torch.Tensor:
    """Run ``len(batches)`` optimizer steps; returns the per-step losses (on the device).

    ``loss_fn``: :func:`lm_loss`, or a compiled version of it (``runtime.compile``)."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    losses = torch.empty(batches.shape[0], device=batches.device)
    model.train()
    for i in range(batches.shape[0]):
        for group in optimizer.param_groups:
            group["lr"] = float(lrs[i])
        loss = loss_fn(model, batches[i])
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses[i] = loss.detach()
    return losses
