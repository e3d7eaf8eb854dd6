"""Typed configs of the proxy CPT engine: model, optimizer, learning-rate schedule, budgets, eval.

These are the parts of an env spec (:mod:`mixagent.envs.spec`) that the engine consumes. They
import only pydantic, so loading and validating a spec stays cheap; torch and transformers are
imported when a model is actually built.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field, model_validator

from mixagent.config import StrictModel


class ModelSpec(StrictModel):
    """The proxy model: a transformers causal-LM config built from scratch (never downloaded).

    ``config`` holds keyword arguments of ``LlamaConfig`` (``arch: llama``) or ``GPT2Config``
    (``arch: gpt2``). The vocabulary size, the context length and the special-token ids come
    from the data directory and the spec's ``seq_len``, so they may not be set here.
    """

    arch: Literal["llama", "gpt2"] = "llama"
    config: dict[str, Any] = Field(default_factory=dict)


class LRSpec(StrictModel):
    """A learning-rate schedule over a run of ``total`` optimizer steps.

    ``warmup_steps`` ramps linearly from ``peak/warmup_steps`` to ``peak`` (for CPT this is the
    *re-warming* of a converged base). Then ``constant`` holds ``peak``; ``cosine`` decays to
    ``min_ratio·peak`` at the last step; ``wsd`` (warmup-stable-decay) holds ``peak`` and decays
    linearly to ``min_ratio·peak`` over the last ``decay_fraction`` of the run.
    """

    schedule: Literal["constant", "cosine", "wsd"] = "cosine"
    peak: float = Field(gt=0)
    warmup_steps: int = Field(default=0, ge=0)
    min_ratio: float = Field(default=0.1, ge=0, le=1)
    decay_fraction: float = Field(default=0.2, gt=0, le=1)


class OptimizerSpec(StrictModel):
    """AdamW (decoupled weight decay on matrices only, as in nanoGPT) with gradient clipping."""

    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    grad_clip: float | None = Field(default=1.0, gt=0)


class PretrainSpec(StrictModel):
    """The base model's pre-training on the source field (run once, cached by content hash).

    Sequences have the CPT's ``seq_len``: it is the proxy's context length.
    """

    tokens: int = Field(gt=0, description="training tokens (rounded up to whole batches)")
    batch_size: int = Field(gt=0)
    weights: Literal["tokens", "uniform"] = Field(
        default="tokens", description="source-domain mixture: proportional to tokens, or uniform"
    )
    lr: LRSpec
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)


class CPTSpec(StrictModel):
    """The continual pre-training budget of one episode.

    An episode is ``num_steps`` re-weighting steps; each trains ``tokens_per_step`` tokens
    (``tokens_per_step / (batch_size·seq_len)`` optimizer steps) under the weights the agent chose.
    The LR schedule spans the whole episode. ``optimizer_state: fresh`` starts CPT with a new
    optimizer (what a practitioner does with a released checkpoint); ``restored`` loads the
    base's AdamW moments.
    """

    num_steps: int = Field(gt=0)
    tokens_per_step: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    seq_len: int = Field(gt=1)
    lr: LRSpec
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    optimizer_state: Literal["fresh", "restored"] = "fresh"

    @model_validator(mode="after")
    def _whole_batches(self) -> CPTSpec:
        per = self.batch_size * self.seq_len
        if self.tokens_per_step % per:
            lo = max(per, self.tokens_per_step // per * per)
            raise ValueError(
                f"tokens_per_step={self.tokens_per_step} is not a multiple of batch_size*seq_len"
                f"={per}; use {lo} or {lo + per}"
            )
        return self

    @property
    def steps_per_action(self) -> int:
        """Optimizer steps per re-weighting step."""
        return self.tokens_per_step // (self.batch_size * self.seq_len)

    @property
    def total_steps(self) -> int:
        return self.steps_per_action * self.num_steps


class TaskSpec(StrictModel):
    """A task set of the data directory scored after every re-weighting step.

    The expected continuation of a prompt is ``delimiter + answer`` unless the prompt already
    ends in whitespace (lm-evaluation-harness's ``target_delimiter`` convention: a prompt
    ``"Answer:"`` is completed by ``" 8"``, and the generated text is compared after stripping).
    """

    name: str
    examples: int = Field(default=64, gt=0, description="the first N rows are used")
    delimiter: str = " "


class EvalSpec(StrictModel):
    """Evaluation after every re-weighting step: fixed held-out sequences per domain + benchmarks.

    ``tasks`` may also be written ``benchmarks`` (what they are since benchmarks generalised task
    sets); either way the config dumps as ``tasks``, so the hashes of existing specs stay the same.
    """

    sequences_per_domain: int = Field(default=4, gt=0)
    batch_size: int = Field(default=64, gt=0)
    tasks: list[TaskSpec] = Field(default_factory=list,
                                  validation_alias=AliasChoices("tasks", "benchmarks"))


class RuntimeSpec(StrictModel):
    """Where and how the proxy runs. Does not change results' meaning, so not in cache keys.

    ``num_threads``: torch intra-op threads while the proxy trains or evaluates (restored after).
    The environment variable ``MIXAGENT_NUM_THREADS`` overrides it (a Ray worker sets it to its
    CPU share); unset, torch's default applies (which honours ``OMP_NUM_THREADS``).
    ``tune_allocator``: on CPU, keep large freed blocks in the heap (glibc ``mallopt``; see
    :func:`mixagent.proxy.runtime.tune_allocator`): ~1.5x faster steps at the shipped size,
    bit-identical results, the process keeps its peak heap mapped. Process-wide once applied.
    ``compile``: ``torch.compile`` the training loss (model forward + cross-entropy; optimizer,
    clipping and loop stay eager) once per engine: ~1.3x faster training steps at the shipped
    size, equal to eager up to float rounding (not bit-identical), ~10-50 s of compiling per
    engine. ``MIXAGENT_COMPILE`` (``1``/``0``) overrides it. Falls back to eager, with a warning,
    where compiling fails (see :func:`mixagent.proxy.runtime.compile_loss`).
    """

    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = Field(default=None, gt=0)
    tune_allocator: bool = True
    compile: bool = False
