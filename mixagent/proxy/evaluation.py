"""Evaluation of the proxy: per-domain held-out loss and task metrics, in batched no-grad passes.

Everything evaluated is read and tokenized once, at construction, into device tensors:

* **Held-out loss.** ``sequences_per_domain`` fixed sequences per domain from the ``eval`` split,
  spread evenly over the shard (no RNG: every run of a spec scores on the same text), stacked
  into one ``[N, seq_len]`` tensor. One forward pass per ``batch_size`` rows; per-domain means are
  a single ``index_add``.
* **Exact match** of a task set (``prompt`` → ``answer``). A document starts after an EOS in
  training, so each example is ``EOS + prompt + delimiter + answer`` (the delimiter, default
  ``" "``, follows lm-evaluation-harness and is skipped when the prompt ends in whitespace; the
  prompt is cut from the left to fit ``seq_len``). Greedy decoding produces the answer
  exactly iff, teacher-forced on the answer, the argmax at every answer position is the answer's
  next token — and then the token after it must end the answer (its text does not start with a
  letter or digit, so ``42`` is not a prefix of ``420``; EOS counts as an end). That needs one
  forward pass instead of one per generated token, and equals greedy decoding whenever the model
  emits the tokenizer's own segmentation of the answer (a test checks it against real decoding).
  The same pass gives ``answer_loss``, the mean NLL of the answer tokens, a smooth companion
  metric that moves long before exact match does on a small proxy. Its negation is
  ``answer_logprob`` (the mean log-probability per answer token of each item, averaged over
  items; the Data Mixing Agent's signal, higher is better), which reward terms may name: it is
  derived from ``answer_loss`` (:func:`~mixagent.data.manifest.metric_value`), not reported.
* **Text benchmarks** (``kind: text``): the first ``examples`` documents, each followed by EOS
  as in a shard, concatenated and cut into whole ``seq_len`` sequences (a held-out domain's
  chunking, every chunk used); ``loss`` is their mean per-token loss.

Benchmarks and the older task sets are named alike in ``eval.tasks`` (a task set is a ``qa``
benchmark); :data:`EVAL_METRICS` lists what each kind reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mixagent.data.manifest import DataDir
from mixagent.errors import DataError
from mixagent.proxy.config import EvalSpec

TASK_METRICS = ("exact_match", "answer_loss")
"""What an evaluation reports for a ``qa`` benchmark (and a task set); ``answer_logprob`` is
derived from ``answer_loss`` (:func:`~mixagent.data.manifest.metric_value`)."""
EVAL_METRICS: dict[str, tuple[str, ...]] = {"qa": TASK_METRICS, "text": ("loss",)}
"""What an evaluation reports per benchmark kind (reward terms may name any metric of
:data:`~mixagent.data.manifest.BENCHMARK_METRICS`)."""


@dataclass
class EvalResult:
    """One evaluation: ``losses[k]`` is domain ``k``'s mean held-out loss (nats per token)."""

    losses: np.ndarray
    tasks: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0

    def copy(self) -> EvalResult:
        return EvalResult(self.losses.copy(), {k: dict(v) for k, v in self.tasks.items()}, self.seconds)


def held_out_chunks(num_chunks: int, count: int) -> np.ndarray:
    """Indices of ``count`` chunks spread evenly over ``num_chunks`` (all of them if fewer)."""
    if num_chunks <= count:
        return np.arange(num_chunks, dtype=np.int64)
    return np.unique(np.linspace(0, num_chunks - 1, count).round().astype(np.int64))


class _TaskTensors:
    """A task set tokenized into one right-padded batch with answer positions marked."""

    def __init__(self, name: str, rows: list[dict[str, Any]], tokenizer: Any, eos: int,
                 seq_len: int, device: torch.device, word_chars: torch.Tensor, delimiter: str):
        prompts, answers = [], []
        for i, row in enumerate(rows):
            if not isinstance(row.get("prompt"), str) or not isinstance(row.get("answer"), str):
                raise DataError(f"task {name!r} row {i}: needs string 'prompt' and 'answer' fields")
            prompt, answer = row["prompt"], row["answer"].strip()
            if prompt and not prompt[-1].isspace():
                answer = delimiter + answer
            prompts.append(prompt)
            answers.append(answer)
        full = tokenizer([p + a for p, a in zip(prompts, answers, strict=True)],
                         add_special_tokens=False)["input_ids"]
        head = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        seqs, starts = [], []
        for i, (f_ids, p_ids) in enumerate(zip(full, head, strict=True)):
            # The answer is what follows the longest common prefix: a BPE merge across the
            # prompt/answer boundary moves the merged token into the answer, as in training text.
            lcp = 0
            while lcp < min(len(f_ids), len(p_ids)) and f_ids[lcp] == p_ids[lcp]:
                lcp += 1
            lcp = min(lcp, len(f_ids) - 1) if len(f_ids) > 1 else 0
            ids = [eos, *f_ids]
            start = lcp + 1  # index in ids of the first answer token
            n_answer = len(ids) - start
            if n_answer < 1 or n_answer + 1 > seq_len - 1:
                raise DataError(f"task {name!r} row {i}: answer of {n_answer} tokens does not fit "
                                f"seq_len {seq_len}")
            # keep the whole answer plus one slot for the end check; cut the prompt from the left
            cut = max(0, len(ids) + 1 - seq_len)
            seqs.append(ids[cut:])
            starts.append(start - cut)
        width = max(len(s) for s in seqs) + 1  # +1: the position after the answer
        tok = np.full((len(seqs), width), eos, dtype=np.int64)
        answer_mask = np.zeros((len(seqs), width - 1), dtype=bool)  # over predicted positions
        end_pos = np.zeros(len(seqs), dtype=np.int64)
        for i, (s, st) in enumerate(zip(seqs, starts, strict=True)):
            tok[i, : len(s)] = s
            answer_mask[i, st - 1 : len(s) - 1] = True  # logits at t predict token t+1
            end_pos[i] = len(s) - 1  # logits here predict the token after the answer
        self.name = name
        self.prompts, self.continuations = prompts, answers  # the text scored, for reports/tests
        self.tokens = torch.from_numpy(tok).to(device)
        self.answer_mask = torch.from_numpy(answer_mask).to(device)
        self.end_pos = torch.from_numpy(end_pos).to(device)
        last_alnum = [a[-1:].isalnum() for a in answers]
        self.check_end = torch.tensor(last_alnum, dtype=torch.bool, device=device)
        self.word_chars = word_chars

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


class _TextTensors:
    """A text benchmark's documents as whole ``seq_len`` sequences (EOS after each document)."""

    def __init__(self, name: str, rows: list[dict[str, Any]], tokenizer: Any, eos: int,
                 seq_len: int, device: torch.device):
        texts = []
        for i, row in enumerate(rows):
            if not isinstance(row.get("text"), str):
                raise DataError(f"benchmark {name!r} row {i}: needs a string 'text' field")
            texts.append(row["text"])
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        flat = np.fromiter((t for doc in ids for t in (*doc, eos)), dtype=np.int64)
        n = flat.size // seq_len
        if n == 0:
            raise DataError(f"benchmark {name!r}: its {len(texts)} documents hold {flat.size} "
                            f"tokens, fewer than one sequence of {seq_len}; raise its "
                            "'examples' in eval.tasks or add longer documents")
        self.name = name
        self.tokens = torch.from_numpy(flat[: n * seq_len].reshape(n, seq_len)).to(device)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


class Evaluator:
    """Scores a model on fixed held-out sequences per domain and on the spec's task sets."""

    def __init__(self, data: DataDir, domains: list[str], spec: EvalSpec, seq_len: int,
                 device: torch.device):
        self.domains = list(domains)
        self.batch_size = spec.batch_size
        self.device = device
        rows, dom_ids = [], []
        ar = np.arange(seq_len, dtype=np.int64)
        for k, name in enumerate(self.domains):
            tokens = data.tokens(name, "eval")
            n = tokens.shape[0] // seq_len
            if n == 0:
                raise DataError(f"domain {name!r} has {tokens.shape[0]} held-out tokens, fewer "
                                f"than one sequence of {seq_len}")
            idx = held_out_chunks(n, spec.sequences_per_domain)
            rows.append(np.asarray(tokens[(idx * seq_len)[:, None] + ar[None, :]], dtype=np.int64))
            dom_ids.append(np.full(idx.size, k, dtype=np.int64))
        self.tokens = torch.from_numpy(np.concatenate(rows)).to(device)
        self.domain_ids = torch.from_numpy(np.concatenate(dom_ids)).to(device)
        self.counts = torch.bincount(self.domain_ids, minlength=len(self.domains)).double()
        self.tasks: list[_TaskTensors] = []  # qa benchmarks and task sets
        self.texts: list[_TextTensors] = []  # text benchmarks
        self.benchmark_names = [t.name for t in spec.tasks]  # the order of EvalResult.tasks
        kinds = {t.name: data.benchmark(t.name).kind for t in spec.tasks}
        tok: Any = data.tokenizer if spec.tasks else None  # loading it costs; only when needed
        eos = data.manifest.tokenizer.eos_token_id
        word_chars = torch.zeros(0, dtype=torch.bool, device=device)
        if "qa" in kinds.values():
            vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
            words = [bool(tok.convert_tokens_to_string([v])[:1].isalnum()) if v else False
                     for v in vocab]
            words[eos] = False
            word_chars = torch.tensor(words, dtype=torch.bool, device=device)
        for t in spec.tasks:
            rows_t = data.benchmark_rows(t.name)[: t.examples]
            if not rows_t:
                raise DataError(f"task {t.name!r} has no examples")
            if kinds[t.name] == "text":
                self.texts.append(_TextTensors(t.name, rows_t, tok, eos, seq_len, device))
            else:
                self.tasks.append(_TaskTensors(t.name, rows_t, tok, eos, seq_len, device,
                                               word_chars, t.delimiter))

    @property
    def num_tokens(self) -> int:
        """Tokens read by one evaluation (held-out sequences plus task batches)."""
        return int(self.tokens.numel() + sum(t.tokens.numel() for t in self.tasks)
                   + sum(t.tokens.numel() for t in self.texts))

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> EvalResult:
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        seq_loss = self.sequence_losses(model, self.tokens)
        sums = torch.zeros(len(self.domains), dtype=torch.float64, device=self.device)
        sums.index_add_(0, self.domain_ids, seq_loss.double())
        losses = (sums / self.counts).cpu().numpy()
        scored = {t.name: self._task(model, t) for t in self.tasks}
        scored.update({t.name: self._text(model, t) for t in self.texts})
        tasks = {name: scored[name] for name in self.benchmark_names}
        if was_training:
            model.train()
        return EvalResult(losses, tasks, time.perf_counter() - t0)

    def sequence_losses(self, model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        """Mean next-token loss of each row of ``tokens``, ``batch_size`` rows per pass."""
        seq_loss = torch.empty(tokens.shape[0], device=self.device)
        for i in range(0, tokens.shape[0], self.batch_size):
            x = tokens[i : i + self.batch_size]
            logits = model(input_ids=x[:, :-1], use_cache=False).logits
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                  reduction="none")  # flat: a transposed layout is slow on CPU
            seq_loss[i : i + x.shape[0]] = nll.view(x.shape[0], -1).mean(dim=1)
        return seq_loss

    def _task(self, model: torch.nn.Module, t: _TaskTensors) -> dict[str, float]:
        correct, nll = self.per_example(model, t)
        return {"exact_match": float(correct.double().mean()),
                "answer_loss": float(nll.double().mean())}

    def _text(self, model: torch.nn.Module, t: _TextTensors) -> dict[str, float]:
        # every sequence has seq_len - 1 predicted tokens: the mean of means is the token mean
        return {"loss": float(self.sequence_losses(model, t.tokens).double().mean())}

    def benchmark_tensors(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A benchmark's loss as token ids ``[B, L]`` and weights ``[B, L-1]`` over the predicted
        positions (summing to 1), so that ``Σ weights · next-token NLL`` is the loss its metrics
        measure: a qa benchmark's ``answer_loss`` (each item's mean answer-token NLL, averaged
        over items), a text benchmark's ``loss``. The gradient-alignment features
        (:mod:`mixagent.proxy.alignment`) differentiate it; defined here, beside the tensors."""
        for t in self.tasks:
            if t.name == name:
                m = t.answer_mask.double()
                w = m / m.sum(dim=1, keepdim=True) / m.shape[0]
                return t.tokens, w.float()
        for x in self.texts:
            if x.name == name:
                n, seq = x.tokens.shape
                return x.tokens, torch.full((n, seq - 1), 1.0 / (n * (seq - 1)), device=self.device)
        raise KeyError(f"benchmark {name!r} is not evaluated; evaluated: "
                       f"{', '.join(self.benchmark_names) or 'none'}")

    def per_example(self, model: torch.nn.Module,
                    t: _TaskTensors) -> tuple[torch.Tensor, torch.Tensor]:
        """Per example: exact match (bool) and mean answer-token NLL, one batched pass."""
        head = model.get_output_embeddings()

        def hidden(ids: torch.Tensor) -> torch.Tensor:
            return model.base_model(input_ids=ids, use_cache=False).last_hidden_state

        correct, nlls = [], []
        for i in range(0, len(t), self.batch_size):
            rows = slice(i, i + self.batch_size)
            c, n = answer_scores(hidden, head, t.tokens[rows], t.answer_mask[rows],
                                 t.end_pos[rows], t.check_end[rows], t.word_chars)
            correct.append(c)
            nlls.append(n)
        return torch.cat(correct), torch.cat(nlls)


def answer_scores(hidden: Callable[[torch.Tensor], torch.Tensor],
                  head: Callable[[torch.Tensor], torch.Tensor], tokens: torch.Tensor,
                  answer_mask: torch.Tensor, end_pos: torch.Tensor, check_end: torch.Tensor,
                  word_chars: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact match (bool) and mean answer-token NLL of each row of one batch of a task set.

    The one definition of exact match (see the module docstring): the proxy's evaluator and the
    folded K-replica evaluation of batched branching both call it, with their own ``hidden``
    (ids → last hidden states) and output ``head``. Only the few answer positions go through
    the head (the vocabulary projection dominates a small proxy's cost), not every prompt
    position.
    """
    x = tokens
    h = hidden(x[:, :-1])
    rows, cols = answer_mask.nonzero(as_tuple=True)
    logits = head(h[rows, cols])  # [answer tokens, vocab]
    target = x[:, 1:][rows, cols]
    n = x.shape[0]
    wrong = torch.zeros(n, dtype=torch.bool, device=x.device)
    wrong.index_put_((rows,), logits.argmax(-1) != target, accumulate=True)
    nll = torch.zeros(n, device=x.device).index_add_(
        0, rows, F.cross_entropy(logits, target, reduction="none"))
    nxt = head(h[torch.arange(n, device=x.device), end_pos]).argmax(-1)
    runs_on = check_end & word_chars[nxt]
    return ~wrong & ~runs_on, nll / answer_mask.sum(1)
