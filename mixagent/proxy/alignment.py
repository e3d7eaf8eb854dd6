"""How each domain relates *right now* to each field's benchmarks: gradient alignment.

The cosine between the gradient of a domain's training loss and the gradient of a field's
benchmark loss, on the current model (the gradient-alignment idea of DoGE and of the
replay/gradient-alignment CPT work): positive means a small step on that domain's text would
also lower the benchmark loss, negative that it would raise it. A mixing policy cannot read
this from losses alone — a domain whose loss falls fastest need not be the one the benchmark
needs — and it changes as training goes on (docs/ENV.md, "Alignment").

Why each choice (docs/DECISIONS.md records the rejected alternatives):

* **Domain batch: fixed training sequences**, ``sequences`` per domain spread evenly over its
  training shard (no RNG). Training text, because the gradient is meant to be the one training
  on the domain would follow; not the held-out sequences, which are (for a field without a
  benchmark) the field objective itself, so a domain would partly be compared with its own
  text. Fixed rather than the sampler's next batch, so the features do not touch the sampler's
  state (the environment stays deterministic, the CPT run's data order unchanged) and change
  between steps only because the model did.
* **Field objective**: the weighted sum (reward-term weights) of the field's benchmark losses —
  a ``qa`` benchmark's mean answer-token NLL (the differentiable companion of its exact match
  and answer log-probability), a ``text`` benchmark's token loss; for a field without a
  benchmark, the mean held-out loss of its domains (what its ``loss`` term scores).
* **Parameters**: ``all`` (every trainable parameter; one backward per batch) or ``head`` (the
  output projection alone, the body held fixed: one no-grad forward and one matmul per batch,
  no backward through the blocks). Only per-parameter dot products and squared norms are
  accumulated, so memory holds one gradient per field objective plus one, never K.
* **Nothing changes**: gradients come from ``torch.autograd.grad`` (no ``.grad`` is written, no
  optimizer step), the model runs in eval mode (restored afterwards) under a forked RNG.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from mixagent.data.manifest import DataDir
from mixagent.errors import DataError
from mixagent.proxy.evaluation import Evaluator, held_out_chunks

AlignmentParams = Literal["all", "head"]


@dataclass(frozen=True)
class FieldObjective:
    """One field's benchmark loss, whose gradient the domains are compared with.

    ``benchmarks``: benchmark (task) name → weight; empty for a field without a benchmark, whose
    objective is then the mean held-out loss of ``domains`` (indices into the aligner's domains).
    """

    benchmarks: dict[str, float] = field(default_factory=dict)
    domains: tuple[int, ...] = ()


#: a batch whose weighted next-token NLL is a loss: token ids [B, L] and per predicted position
#: weights [B, L-1] (all the batches of one loss together sum to 1)
_Batch = tuple[torch.Tensor, torch.Tensor]


class Aligner:
    """Per-domain gradient cosines with each field objective, on a model (see module docstring).

    Args:
        data: the data directory (or domain view) the domains come from.
        domains: the domains, in observation order.
        evaluator: the evaluator whose benchmark and held-out tensors define the objectives.
        objectives: one per field, in feature order (source, then target).
        sequences: training sequences per domain batch.
        params: ``all`` or ``head`` (see module docstring).
        seq_len: tokens per sequence.
        batch_size: rows per forward pass.
    """

    def __init__(self, data: DataDir, domains: Sequence[str], evaluator: Evaluator,
                 objectives: Sequence[FieldObjective], sequences: int, params: AlignmentParams,
                 seq_len: int, batch_size: int):
        if params not in ("all", "head"):
            raise ValueError(f"alignment params must be 'all' or 'head', got {params!r}")
        self.params = params
        self.batch_size = int(batch_size)
        device = evaluator.device
        ar = np.arange(seq_len, dtype=np.int64)
        self.domain_batches: list[list[_Batch]] = []
        for name in domains:
            tokens = data.tokens(name, "train")
            n = tokens.shape[0] // seq_len
            if n == 0:
                raise DataError(f"domain {name!r} has {tokens.shape[0]} training tokens, fewer "
                                f"than one sequence of {seq_len}")
            idx = held_out_chunks(n, sequences)
            x = torch.from_numpy(np.asarray(tokens[(idx * seq_len)[:, None] + ar[None, :]],
                                            dtype=np.int64)).to(device)
            w = torch.full((x.shape[0], seq_len - 1), 1.0 / (x.shape[0] * (seq_len - 1)),
                           device=device)
            self.domain_batches.append(self._chunks(x, w))
        self.objective_batches = [self._objective(evaluator, o) for o in objectives]

    def _objective(self, evaluator: Evaluator, objective: FieldObjective) -> list[_Batch]:
        batches: list[_Batch] = []
        if objective.benchmarks:
            total = sum(objective.benchmarks.values())
            for name, weight in objective.benchmarks.items():
                x, w = evaluator.benchmark_tensors(name)
                batches += self._chunks(x, w * (weight / total))
            return batches
        if not objective.domains:
            raise ValueError("a field objective needs benchmarks or domains")
        # the mean over the field's domains of each one's mean held-out loss, as one batch
        ids, tokens = evaluator.domain_ids, evaluator.tokens
        per_domain = 1.0 / len(objective.domains)
        xs, ws = [], []
        for k in objective.domains:
            x = tokens[(ids == k).nonzero(as_tuple=True)[0]]
            xs.append(x)
            ws.append(torch.full((x.shape[0], x.shape[1] - 1),
                                 per_domain / (x.shape[0] * (x.shape[1] - 1)), device=x.device))
        return self._chunks(torch.cat(xs), torch.cat(ws))

    def _chunks(self, x: torch.Tensor, w: torch.Tensor) -> list[_Batch]:
        return [(x[i : i + self.batch_size], w[i : i + self.batch_size])
                for i in range(0, x.shape[0], self.batch_size)]

    # -- computation -----------------------------------------------------------------------------
    def __call__(self, model: torch.nn.Module) -> np.ndarray:
        """``[K, F]`` cosines (float64, in [-1, 1]; 0 where a gradient vanishes)."""
        with _untouched(model):
            params = self._parameters(model)
            targets = [self._grad(model, params, b) for b in self.objective_batches]
            t_norm = [_dot(gs, gs) for gs in targets]
            hidden = self._domain_hidden(model) if self.params == "head" else None
            rows = []  # per domain: its squared norm, then its dot product with each target
            for k, batches in enumerate(self.domain_batches):
                gs = self._grad(model, params, batches, None if hidden is None else hidden[k])
                rows.append(torch.stack([_dot(gs, gs), *(_dot(gs, tg) for tg in targets)]))
            stats = torch.stack(rows).cpu().numpy()  # one host transfer for all domains
            norms = np.array([float(t) for t in t_norm])
        den = np.sqrt(stats[:, :1] * norms[None, :])
        cos = np.divide(stats[:, 1:], den, out=np.zeros_like(den), where=den > 0)
        return np.clip(cos, -1.0, 1.0)

    def _parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        if self.params == "head":
            head = model.get_output_embeddings()
            return [p for p in head.parameters()]
        return [p for p in model.parameters() if p.requires_grad]

    @torch.no_grad()
    def _domain_hidden(self, model: torch.nn.Module) -> list[list[torch.Tensor]]:
        """``head`` mode: the body's hidden states of every domain batch, in full-width passes
        (one per ``batch_size`` rows over all domains, not one small pass per domain)."""
        flat = [x for batches in self.domain_batches for x, _ in batches]
        xs = torch.cat(flat)[:, :-1]
        h = torch.cat([model.base_model(input_ids=xs[i : i + self.batch_size],
                                        use_cache=False).last_hidden_state
                       for i in range(0, xs.shape[0], self.batch_size)])
        parts = iter(torch.split(h, [x.shape[0] for x in flat]))
        return [[next(parts) for _ in batches] for batches in self.domain_batches]

    def _grad(self, model: torch.nn.Module, params: list[torch.nn.Parameter],
              batches: list[_Batch], hidden: list[torch.Tensor] | None = None
              ) -> list[torch.Tensor]:
        """The gradient of ``Σ weights · NLL`` over ``batches`` (summed chunk by chunk);
        ``hidden``: the batches' body outputs, already computed (``head`` mode)."""
        head = model.get_output_embeddings()
        total: list[torch.Tensor] | None = None
        for i, (x, w) in enumerate(batches):
            rows, cols = w.nonzero(as_tuple=True)
            if hidden is not None:
                h = hidden[i]
            elif self.params == "head":
                with torch.no_grad():
                    h = model.base_model(input_ids=x[:, :-1], use_cache=False).last_hidden_state
            else:
                h = model.base_model(input_ids=x[:, :-1], use_cache=False).last_hidden_state
            # only the scored positions go through the head (a qa batch scores a few answer tokens)
            logits = head(h[rows, cols])
            nll = F.cross_entropy(logits.float(), x[:, 1:][rows, cols], reduction="none")
            loss = (nll * w[rows, cols]).sum()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            gs = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)]
            total = gs if total is None else [a + b for a, b in zip(total, gs, strict=True)]
        assert total is not None
        return total


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """The inner product of two gradients given per parameter (float64, on their device)."""
    return torch.stack([(x.double() * y.double()).sum() for x, y in zip(a, b, strict=True)]).sum()


@contextlib.contextmanager
def _untouched(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout), gradients enabled, the global RNG forked: the caller's model and
    RNG are as before afterwards (gradients go through ``autograd.grad``, never into ``.grad``)."""
    was_training = model.training
    device = next(model.parameters()).device
    devices = [device] if device.type == "cuda" else []
    model.eval()
    try:
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            yield
    finally:
        if was_training:
            model.train()
