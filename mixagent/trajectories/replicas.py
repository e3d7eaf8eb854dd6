"""K copies of the proxy trained and evaluated as one batched computation (fast branching,
population batching).

The K replicas are either K branches from one snapshot (:mod:`~mixagent.trajectories.branching`)
or P whole episodes that keep their own state (:mod:`~mixagent.trajectories.population`): the
trainer only sees stacked parameters and optimizer state, one batch and one LR per step.

Branching tries K actions from one snapshot. Done one after another, each branch costs a full
re-weighting step, so branching by itself yields no more transitions per CPU-second than plain
episodes. But a proxy on a CPU is small: much of a training step is per-operation overhead
(Python, dispatch, tiny matmuls) that does not grow with the batch. :class:`ReplicaTrainer`
therefore *folds* K replicas of the model into one module whose parameters carry a leading
replica axis ``[K, ...]``:

* ``Linear``/``Conv1D`` layers become batched matmuls (``bmm``) over replica groups of rows,
  ``Embedding`` looks rows up in the replica's own table, norms scale by the replica's gain;
* the batch is ``[K·B, seq]`` — replica ``k`` owns rows ``k·B … (k+1)·B-1`` — so attention, rotary
  embeddings and masks run unchanged, once;
* the loss is the sum of the K replicas' mean losses, so each replica's gradient is exactly its
  own; gradient clipping is per replica; AdamW is element-wise, so one AdamW over the stacked
  parameters is K independent AdamWs.

The result equals K sequential steps up to floating-point reassociation (``bmm`` vs ``mm``).
Nothing is trusted blindly: :meth:`ReplicaTrainer.verify` checks the folded forward pass against
the original model with K *different* parameter sets (catching any layer type folded wrongly),
and the worker compares the first batched branch of each worker with a real ``env.step``
before using the fast path; any mismatch (or an unsupported layer, dropout, a changed engine)
falls back to sequential branching with a warning.

This module reads public attributes of :class:`~mixagent.proxy.engine.ProxyEngine` (``model``,
``optimizer``, ``cpt``, ``lrs``, ``data``, ``domains``, ``evaluator``) and of its evaluator.
"""

from __future__ import annotations

import copy
import inspect
import logging
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


#: logits one folded evaluation pass may hold (2**27 fp32 = 512 MiB): K x rows x seq x vocab
MAX_EVAL_LOGITS = 2**27


class FoldError(RuntimeError):
    """The model cannot be folded into replicas (unsupported layer, dropout, ...)."""


class _Ctx:
    """Shared by the folded layers: the number of replicas and the current batch's rows."""

    def __init__(self, k: int):
        self.k = k
        self.rows = k  # rows of the current batch (K·B), set per forward call


class _KLinear(nn.Module):
    def __init__(self, ctx: _Ctx, weight: nn.Parameter, bias: nn.Parameter | None, conv1d: bool):
        super().__init__()
        self.ctx, self.weight, self.bias, self.conv1d = ctx, weight, bias, conv1d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, shape = self.ctx.k, x.shape
        x3 = x.reshape(k, -1, shape[-1])
        w = self.weight if self.conv1d else self.weight.transpose(1, 2)  # [K, in, out]
        y = torch.bmm(x3, w) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(1), x3, w)
        return y.view(*shape[:-1], y.shape[-1])


class _KEmbedding(nn.Module):
    def __init__(self, ctx: _Ctx, weight: nn.Parameter, padding_idx: int | None):
        super().__init__()
        self.ctx, self.weight, self.padding_idx = ctx, weight, padding_idx

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        k, v, rows = self.ctx.k, self.weight.shape[1], self.ctx.rows
        table = self.weight.reshape(k * v, -1)
        offsets = torch.arange(k, device=ids.device) * v
        if ids.shape[0] == rows:  # one id row per batch row: replica k owns rows k*B...
            offsets = offsets.repeat_interleave(rows // k).view(-1, *([1] * (ids.dim() - 1)))
            out = F.embedding(ids + offsets, table)
        elif ids.shape[0] == 1:  # ids shared by all rows (GPT-2's position ids [1, seq])
            out = F.embedding(ids + offsets.view(k, *([1] * (ids.dim() - 1))), table)
            out = out.unsqueeze(1).expand(k, rows // k, *out.shape[1:]).reshape(rows, *out.shape[1:])
            ids = ids.expand(rows, *ids.shape[1:])
        else:
            raise FoldError(f"embedding called with {ids.shape[0]} id rows, expected {rows} or 1")
        if self.padding_idx is not None:  # nn.Embedding gives the padding row no gradient
            out = torch.where((ids == self.padding_idx).unsqueeze(-1), out.detach(), out)
        return out


class _KRMSNorm(nn.Module):
    def __init__(self, ctx: _Ctx, weight: nn.Parameter, eps: float):
        super().__init__()
        self.ctx, self.weight, self.variance_epsilon = ctx, weight, eps

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # LlamaRMSNorm, per replica gain
        shape, dtype = h.shape, h.dtype
        h = h.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        h = h.to(dtype).reshape(self.ctx.k, -1, shape[-1])
        return (self.weight.unsqueeze(1) * h).view(shape)


class _KLayerNorm(nn.Module):
    def __init__(self, ctx: _Ctx, weight: nn.Parameter, bias: nn.Parameter | None,
                 shape: tuple[int, ...], eps: float):
        super().__init__()
        self.ctx, self.weight, self.bias, self.shape, self.eps = ctx, weight, bias, shape, eps

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        shape = h.shape
        y = F.layer_norm(h, self.shape, None, None, self.eps).reshape(self.ctx.k, -1, shape[-1])
        y = y * self.weight.unsqueeze(1)
        if self.bias is not None:
            y = y + self.bias.unsqueeze(1)
        return y.view(shape)


def _has_dropout(model: nn.Module) -> bool:
    cfg = getattr(model, "config", None)
    for key in ("attention_dropout", "attn_pdrop", "resid_pdrop", "embd_pdrop", "hidden_dropout",
                "dropout"):
        if float(getattr(cfg, key, 0.0) or 0.0) > 0:
            return True
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())


class ReplicaModel:
    """A causal LM folded into K replicas (see module docstring). Raises :class:`FoldError`."""

    def __init__(self, model: nn.Module, k: int):
        if k < 1:
            raise FoldError("need at least one replica")
        if _has_dropout(model):
            raise FoldError("the model uses dropout (random masks differ per replica)")
        from transformers.pytorch_utils import Conv1D

        self.k = k
        self.ctx = _Ctx(k)
        self.model = copy.deepcopy(model)
        stacked: dict[int, nn.Parameter] = {}

        def stack(p: nn.Parameter | None) -> nn.Parameter | None:
            if p is None:
                return None
            if id(p) not in stacked:
                stacked[id(p)] = nn.Parameter(p.detach().unsqueeze(0).repeat(k, *([1] * p.dim())),
                                              requires_grad=p.requires_grad)
            return stacked[id(p)]

        # the copy shares tied parameters among its own modules; map copy params -> stacked ones
        for parent_name, parent in list(self.model.named_modules()):
            for name, child in list(parent.named_children()):
                full = f"{parent_name}.{name}" if parent_name else name
                new = self._fold(child, stack, Conv1D, full)
                if new is not None:
                    setattr(parent, name, new)
        for name, mod in self.model.named_modules():
            if isinstance(mod, (_KLinear, _KEmbedding, _KRMSNorm, _KLayerNorm)):
                continue
            own = [n for n, p in mod.named_parameters(recurse=False) if p is not None]
            if own:
                raise FoldError(f"layer {name or '<root>'} ({type(mod).__name__}) has parameters "
                                f"{own} that the fold does not know how to batch")
        # original parameter name (all aliases, tied ones included) -> stacked parameter
        self.by_name: dict[str, nn.Parameter] = {}
        orig = dict(model.named_parameters(remove_duplicate=False))
        folded = dict(self.model.named_parameters(remove_duplicate=False))
        for name in orig:
            if name not in folded:
                raise FoldError(f"parameter {name} was lost while folding")
            self.by_name[name] = folded[name]
        self.params: list[nn.Parameter] = list(self.model.parameters())  # unique
        self.model.train()

    def _fold(self, child: nn.Module, stack: Any, conv1d_cls: type, full: str) -> nn.Module | None:
        if isinstance(child, nn.Linear):
            return _KLinear(self.ctx, stack(child.weight), stack(child.bias), conv1d=False)
        if isinstance(child, conv1d_cls):
            return _KLinear(self.ctx, stack(child.weight), stack(child.bias), conv1d=True)
        if isinstance(child, nn.Embedding):
            if child.max_norm is not None or child.scale_grad_by_freq or child.sparse:
                raise FoldError(f"embedding {full} uses max_norm/scale_grad_by_freq/sparse")
            return _KEmbedding(self.ctx, stack(child.weight), child.padding_idx)
        if isinstance(child, nn.LayerNorm):
            if not child.elementwise_affine:
                return None
            return _KLayerNorm(self.ctx, stack(child.weight), stack(child.bias),
                               tuple(child.normalized_shape), child.eps)
        if type(child).__name__.endswith("RMSNorm") and hasattr(child, "variance_epsilon") and \
                [n for n, _ in child.named_parameters(recurse=False)] == ["weight"]:
            return _KRMSNorm(self.ctx, stack(child.weight), float(child.variance_epsilon))
        return None

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits ``[K·B, seq, V]`` of ``[K·B, seq]`` ids (replica k owns rows k·B...)."""
        self.ctx.rows = input_ids.shape[0]
        return self.model(input_ids=input_ids, use_cache=False).logits

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Last hidden states ``[K·B, seq, d]`` (the body without the output head)."""
        self.ctx.rows = input_ids.shape[0]
        return self.model.base_model(input_ids=input_ids, use_cache=False).last_hidden_state

    @torch.no_grad()
    def set_all(self, named: dict[str, torch.Tensor]) -> None:
        """Every replica's parameters := ``named`` (a state dict of the original model)."""
        for name, p in self.by_name.items():
            p.copy_(named[name].unsqueeze(0).expand_as(p))

    def replica_tensor(self, name: str, k: int) -> torch.Tensor:
        return self.by_name[name].detach()[k]


class ReplicaTrainer:
    """K replicas of an engine's model and optimizer, trained and evaluated in one computation."""

    def __init__(self, engine: Any, k: int):
        self.engine = engine
        self.k = k
        self.rm = ReplicaModel(engine.model, k)
        orig_opt: torch.optim.Optimizer = engine.optimizer
        names = {id(p): n for n, p in engine.model.named_parameters()}
        groups = []
        for g in orig_opt.param_groups:
            params = [self.rm.by_name[names[id(p)]] for p in g["params"]]
            groups.append({**{key: v for key, v in g.items() if key != "params"}, "params": params})
        accepted = inspect.signature(type(orig_opt).__init__).parameters
        defaults = {key: v for key, v in orig_opt.defaults.items()
                    if key != "params" and key in accepted}
        self.optimizer = type(orig_opt)(groups, **defaults)
        self._names = names
        self._grad_clip = engine.cpt.optimizer.grad_clip
        #: evaluation holds at most about this many logits at once (see _sequence_losses)
        self.max_logits = MAX_EVAL_LOGITS
        self.verify()

    # -- checks ------------------------------------------------------------------------------------
    @torch.no_grad()
    def verify(self, atol: float = 1e-5) -> None:
        """Folded logits of K *different* parameter sets == the original model's, per replica."""
        model = self.engine.model
        base = {n: p.detach().clone() for n, p in model.named_parameters()}
        gen = torch.Generator().manual_seed(0)
        sets = [{n: p + 0.01 * torch.randn(p.shape, generator=gen).to(p) for n, p in base.items()}
                for _ in range(self.k)]
        for name, p in self.rm.by_name.items():
            canonical = self._names[id(model.get_parameter(name))]  # tied aliases included
            p.copy_(torch.stack([s[canonical] for s in sets]))
        seq = min(16, self.engine.cpt.seq_len)
        vocab = int(self.engine.model.get_input_embeddings().weight.shape[0])
        ids = torch.randint(0, vocab, (2, seq), generator=gen).to(self.engine.device)
        was = model.training
        model.eval()
        self.rm.model.eval()
        try:
            folded = self.rm(ids.repeat(self.k, 1)).view(self.k, 2, seq, -1)
            for i, s in enumerate(sets):
                with _swapped(model, s):
                    ref = model(input_ids=ids, use_cache=False).logits
                err = float((folded[i] - ref).abs().max())
                if not err <= atol * max(1.0, float(ref.abs().max())):
                    raise FoldError(f"folded model differs from the original on replica {i} "
                                    f"(max abs diff {err:.3g})")
        finally:
            model.train(was)
            self.rm.model.train()

    # -- state -------------------------------------------------------------------------------------
    @torch.no_grad()
    def load_live(self) -> None:
        """Every replica := the engine's current model and optimizer state."""
        model, opt = self.engine.model, self.engine.optimizer
        self.rm.set_all(dict(model.named_parameters(remove_duplicate=False)))
        self.optimizer.state.clear()
        for p in (p for g in opt.param_groups for p in g["params"]):
            st = opt.state.get(p)
            if not st:
                continue
            fp = self.rm.by_name[self._names[id(p)]]
            self.optimizer.state[fp] = {
                key: (v.detach().unsqueeze(0).repeat(self.k, *([1] * v.dim()))
                      if torch.is_tensor(v) and v.shape == p.shape else
                      (v.detach().clone() if torch.is_tensor(v) else copy.deepcopy(v)))
                for key, v in st.items()}

    def model_state(self, k: int, template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Replica ``k``'s parameters as a state dict of the original model (buffers from template)."""
        out = {}
        for key, v in template.items():
            out[key] = self.rm.replica_tensor(key, k).clone() if key in self.rm.by_name else v.clone()
        return out

    def optimizer_state(self, k: int, template: dict[str, Any], lr: float) -> dict[str, Any]:
        """Replica ``k``'s optimizer state dict, laid out like the engine optimizer's ``template``."""
        params = [p for g in self.engine.optimizer.param_groups for p in g["params"]]
        state: dict[int, dict[str, Any]] = {}
        for i, p in enumerate(params):
            fp = self.rm.by_name[self._names[id(p)]]
            st = self.optimizer.state.get(fp)
            if not st:
                continue
            state[i] = {key: (v[k].clone() if torch.is_tensor(v) and v.shape == fp.shape else
                              (v.clone() if torch.is_tensor(v) else copy.deepcopy(v)))
                        for key, v in st.items()}
        groups = [{**g, "lr": lr} for g in copy.deepcopy(template["param_groups"])]
        return {"state": state, "param_groups": groups}

    # -- training ----------------------------------------------------------------------------------
    def train(self, batches: torch.Tensor, lrs: np.ndarray) -> torch.Tensor:
        """``batches[k, s]`` is replica k's ``[B, seq]`` batch of optimizer step s; returns losses [K, S]."""
        k, steps = batches.shape[0], batches.shape[1]
        losses = torch.empty(k, steps, device=batches.device)
        params = self.rm.params
        for s in range(steps):
            for group in self.optimizer.param_groups:
                group["lr"] = float(lrs[s])
            x = batches[:, s].reshape(-1, batches.shape[-1])
            logits = self.rm(x[:, :-1])
            nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1),
                                  reduction="none").view(k, -1).mean(1)
            nll.sum().backward()
            if self._grad_clip is not None:
                self._clip(params, float(self._grad_clip))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            losses[:, s] = nll.detach()
        return losses

    def _clip(self, params: list[nn.Parameter], max_norm: float) -> None:
        """``clip_grad_norm_`` per replica: each replica's global norm over its own gradients."""
        grads = [p.grad for p in params if p.grad is not None]
        norms = torch.stack([torch.linalg.vector_norm(g.reshape(self.k, -1), dim=1) for g in grads])
        total = torch.linalg.vector_norm(norms, dim=0)  # [K]
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for g in grads:
            g.mul_(coef.view(self.k, *([1] * (g.dim() - 1))))

    # -- evaluation --------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> list[Any]:
        """One :class:`~mixagent.proxy.evaluation.EvalResult` per replica (the engine's metrics)."""
        from mixagent.proxy.evaluation import EvalResult

        ev = self.engine.evaluator
        t0 = time.perf_counter()
        self.rm.model.eval()
        try:
            k = self.k
            seq_loss = self._sequence_losses(ev, ev.tokens)
            sums = torch.zeros(k, len(ev.domains), dtype=torch.float64, device=seq_loss.device)
            sums.index_add_(1, ev.domain_ids, seq_loss.double())
            losses = (sums / ev.counts).cpu().numpy()
            tasks: list[dict[str, dict[str, float]]] = [{} for _ in range(k)]
            for t in ev.tasks:
                for r, metrics in enumerate(self._task(ev, t)):
                    tasks[r][t.name] = metrics
            for x in ev.texts:  # text benchmarks: the mean loss of their sequences
                text_loss = self._sequence_losses(ev, x.tokens).double().mean(dim=1)
                for r in range(k):
                    tasks[r][x.name] = {"loss": float(text_loss[r])}
            tasks = [{name: tr[name] for name in ev.benchmark_names} for tr in tasks]
        finally:
            self.rm.model.train()
        share = (time.perf_counter() - t0) / k
        return [EvalResult(losses[r].copy(), tasks[r], share) for r in range(k)]

    def _sequence_losses(self, ev: Any, tokens: torch.Tensor) -> torch.Tensor:
        """``[K, rows]``: each replica's mean next-token loss of each row of ``tokens`` (held-out
        sequences, a text benchmark's), ``ev.batch_size`` rows per folded pass (fewer when K is large,
        see :data:`MAX_EVAL_LOGITS`)."""
        k = self.k
        out = torch.empty(k, tokens.shape[0], device=tokens.device)
        # a large population (P in the hundreds on a GPU) would hold P x batch_size rows of
        # logits at once: fewer rows per pass bound that; each row's loss is its own either way
        vocab = int(self.engine.model.get_input_embeddings().weight.shape[0])
        per_pass = max(1, min(ev.batch_size,
                              self.max_logits // max(1, k * (tokens.shape[1] - 1) * vocab)))
        for i in range(0, tokens.shape[0], per_pass):
            x = tokens[i : i + per_pass]
            logits = self.rm(x[:, :-1].repeat(k, 1))
            # row-major (tokens, vocab) layout: same values as the engine's transposed call,
            # ~2.5x faster on CPU
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                  x[:, 1:].repeat(k, 1).reshape(-1), reduction="none")
            out[:, i : i + x.shape[0]] = nll.view(k * x.shape[0], -1).mean(dim=1).view(k, -1)
        return out

    def alignment(self) -> list[np.ndarray | None]:
        """Each replica's alignment features (``[K_domains, 2]``; None when the engine measures
        none), by the engine's own :class:`~mixagent.proxy.alignment.Aligner` on the engine's
        model with the replica's parameters swapped in (restored after). Gradients per replica
        are not folded: the alignment costs what K sequential steps' would."""
        eng = self.engine
        if eng.aligner is None:
            return [None] * self.k
        out = []
        for r in range(self.k):
            named = {n: self.rm.replica_tensor(n, r) for n, _ in eng.model.named_parameters()}
            with _swapped(eng.model, named):
                out.append(eng.evaluate_alignment())
        return out

    def _task(self, ev: Any, t: Any) -> list[dict[str, float]]:
        """Each replica's task metrics, by the proxy's own exact-match definition
        (:func:`~mixagent.proxy.evaluation.answer_scores`) on the K-times repeated batch."""
        from mixagent.proxy.evaluation import answer_scores

        k = self.k
        head = self.rm.model.get_output_embeddings()
        correct, nlls = [], []
        for i in range(0, len(t), ev.batch_size):
            rows = slice(i, i + ev.batch_size)
            b = int(t.tokens[rows].shape[0])
            c, n = answer_scores(self.rm.hidden_states, head, t.tokens[rows].repeat(k, 1),
                                 t.answer_mask[rows].repeat(k, 1), t.end_pos[rows].repeat(k),
                                 t.check_end[rows].repeat(k), t.word_chars)
            correct.append(c.view(k, b))
            nlls.append(n.view(k, b))
        em = torch.cat(correct, dim=1).double().mean(dim=1)
        al = torch.cat(nlls, dim=1).double().mean(dim=1)
        return [{"exact_match": float(em[r]), "answer_loss": float(al[r])} for r in range(k)]


class _swapped:
    """Temporarily load named parameters into a model (restored on exit)."""

    def __init__(self, model: nn.Module, named: dict[str, torch.Tensor]):
        self.model, self.named = model, named
        self.saved: dict[str, torch.Tensor] = {}

    def __enter__(self) -> None:
        with torch.no_grad():
            for n, p in self.model.named_parameters():
                self.saved[n] = p.detach().clone()
                p.copy_(self.named[n])

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for n, p in self.model.named_parameters():
                p.copy_(self.saved[n])
