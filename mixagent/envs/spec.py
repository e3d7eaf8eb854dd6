"""The env spec: one YAML file that describes a proxy CPT scenario (see docs/ENV.md).

Loading validates types and unknown keys (pydantic, no data access); :func:`resolve_spec` then
checks the spec against its data directory and model library — fields, domains, task sets,
reward terms, the model config — and raises :class:`~mixagent.errors.ConfigError` naming the
file and the key. Relative ``data.path`` values are resolved against the spec file's folder, so
a spec and its data can move together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, SerializerFunctionWrapHandler, model_serializer, model_validator

from mixagent.config import StrictModel, load_yaml_config
from mixagent.proxy.config import CPTSpec, EvalSpec, ModelSpec, PretrainSpec, RuntimeSpec


class DataSpec(StrictModel):
    """Exactly one of ``builtin`` (the embedded corpus at a size) or ``path`` (a data directory)."""

    builtin: Literal["tiny", "small", "full"] | None = None
    path: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if (self.builtin is None) == (self.path is None):
            raise ValueError("set exactly one of 'builtin' (tiny|small|full) or 'path'")
        return self


class DomainSpaceSpec(StrictModel):
    """A coarser or finer cut of the data directory's domains (see :mod:`mixagent.data.views`).

    ``groups``: ``{new_name: [member, ...]}`` — each group is one domain, the union of its members
    (which must lie in one field and be used once); within a group, sequences are drawn in
    proportion to member tokens, and its held-out set is the members' held-out sets. Domains in no
    group stay as they are. ``split``: every domain (after grouping) becomes ``split`` contiguous
    parts of its token stream, named ``<domain>#1`` .. ``<domain>#N`` (held-out sets cut alike).
    The base model never depends on the domain space: it pre-trains on the underlying domains.
    """

    groups: dict[str, list[str]] = Field(default_factory=dict)
    split: int = Field(default=1, ge=1)


class RewardSpec(StrictModel):
    """The balanced score and the reward derived from it.

    Each field's score is a weighted mean of *terms*, each normalised against the base so the
    base scores 0 and higher is better: ``loss`` — the mean over the field's domains of the
    relative held-out loss reduction ``(L_base - L) / L_base``; ``<task>.exact_match`` —
    accuracy gain ``EM - EM_base``; ``<task>.answer_loss`` — relative reduction of the answer's
    NLL. The balanced score aggregates the source score ``S`` and target score ``T``:
    ``mean`` = (S+T)/2, ``min`` = min(S, T), ``weighted`` = w·S + (1-w)·T with
    ``w = source_weight``. The reward of a step is ``scale`` times the change of the balanced
    score, so an episode's return is ``scale`` times the final balanced score.

    ``normalisation`` says how a loss-like term (lower is better) is set against the base:
    ``relative`` — ``(base - cur) / base``, in (-inf, 1]: forgetting is unbounded below while a
    gain is capped at 1, so a collapsing source field swamps everything; ``bounded`` — the
    symmetric relative change ``2 (base - cur) / (base + cur)``, in (-2, 2), equal to
    ``relative`` to first order (small changes keep their numbers) and antisymmetric (halving a
    loss scores what doubling it costs). Exact match stays ``EM - EM_base`` in both: it is a
    proportion, already bounded in [-1, 1].
    """

    aggregator: Literal["mean", "min", "weighted"] = "mean"
    source_weight: float = Field(default=0.5, ge=0, le=1)
    source_terms: dict[str, float] = Field(default_factory=lambda: {"loss": 1.0})
    target_terms: dict[str, float] = Field(default_factory=lambda: {"loss": 1.0})
    scale: float = Field(default=1.0, gt=0)
    normalisation: Literal["relative", "bounded"] = Field(
        default="relative", description="relative: (base-cur)/base; bounded: 2(base-cur)/(base+cur)")

    @model_serializer(mode="wrap")
    def _omit_default_normalisation(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave ``normalisation`` out of dumps when it is the default, so specs written before
        the key existed keep their env-spec hash (trajectory sets and policies are keyed by it)."""
        out: dict[str, Any] = handler(self)
        if out.get("normalisation") == "relative":
            del out["normalisation"]
        return out


class ActionSpec(StrictModel):
    """The action map (see :func:`mixagent.envs.actions.weights_from_action`).

    ``scale``: logits are ``scale·action``, so two domains' weights differ by at most
    ``exp(2·scale)`` (before the floor). ``floor``: every domain gets at least this weight.
    """

    scale: float = Field(default=3.0, gt=0)
    floor: float = Field(default=0.0, ge=0, lt=1)


ObservationFeature = Literal["benchmark_scores", "alignment", "objective"]


class AlignmentSpec(StrictModel):
    """How the per-domain gradient-alignment features are measured (:mod:`mixagent.proxy.alignment`).

    ``sequences``: fixed training sequences per domain whose loss gradient is compared with each
    field's benchmark-loss gradient. ``params``: ``head`` — the gradient of the output projection
    alone (one forward and one matmul per batch); ``all`` — of every trainable parameter (one
    full backward per batch). The defaults are the most the 1.15x step-cost bar allows on the
    shipped proxy (measured: head/4 ≈ 0.19 s, head/8 ≈ 0.23 s, all/4 ≈ 0.33 s, all/8 ≈ 0.50 s
    per step, against ≈ 1.5 s of training); ``all`` separates domains more clearly, at 8
    sequences it reproduces the documented probe (docs/ENV.md, "Alignment").
    """

    sequences: int = Field(default=4, gt=0, le=1024)
    params: Literal["all", "head"] = "head"


class ObservationSpec(StrictModel):
    """Clip ranges that keep the observation space finite, and the optional feature groups.

    ``features`` adds groups to the v1 layout (docs/ENV.md, "Observation"): ``benchmark_scores``
    — global ``source_benchmark``, ``target_benchmark``; ``alignment`` — per-domain
    ``align_source``, ``align_target``; ``objective`` — global ``objective_*``, what the reward
    asks for. The columns always come in the documented order (alignment, benchmark_scores,
    objective), whatever the order of the list. Empty (the default) is the v1 layout, bit for bit.
    """

    loss_max: float = Field(default=20.0, gt=0, description="losses clip to [0, loss_max]")
    score_max: float = Field(default=1.0, gt=0, description="scores clip to ±score_max")
    features: list[ObservationFeature] = Field(
        default_factory=list, description="optional feature groups: benchmark_scores, alignment, objective")
    alignment: AlignmentSpec = Field(default_factory=AlignmentSpec)

    @model_validator(mode="after")
    def _check_features(self) -> ObservationSpec:
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"features: a group is listed twice: {self.features}")
        if "alignment" not in self.features and self.alignment != AlignmentSpec():
            raise ValueError("alignment: settings given but 'alignment' is not in features")
        return self

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave ``features`` and ``alignment`` out of dumps when unset, so specs written before
        the keys existed keep their env-spec hash (trajectory sets and policies are keyed by it)."""
        out: dict[str, Any] = handler(self)
        if not out.get("features"):
            out.pop("features", None)
        if "alignment" not in self.features:
            out.pop("alignment", None)
        return out


class EnvSpec(StrictModel):
    """A proxy CPT scenario. See docs/ENV.md for every key."""

    name: str = ""
    description: str = ""
    seed: int = Field(default=0, ge=0, description="model initialisation and base pre-training")
    data: DataSpec
    source_field: str
    target_field: str
    domain_space: DomainSpaceSpec | None = Field(
        default=None, description="regroup and/or split the data directory's domains")
    domains: list[str] | None = Field(
        default=None, description="a subset of the two fields' domains (after domain_space), "
                                  "in action order")
    model: ModelSpec = Field(default_factory=ModelSpec)
    pretrain: PretrainSpec
    cpt: CPTSpec
    eval: EvalSpec = Field(default_factory=EvalSpec)
    reward: RewardSpec = Field(default_factory=RewardSpec)
    action: ActionSpec = Field(default_factory=ActionSpec)
    observation: ObservationSpec = Field(default_factory=ObservationSpec)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)

    _origin: str = PrivateAttr(default="env spec")
    _root: Path | None = PrivateAttr(default=None)

    @model_serializer(mode="wrap")
    def _omit_unset_domain_space(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave ``domain_space`` out of dumps when unset, so specs written before the key existed
        keep their env-spec hash (trajectory sets and policies are keyed by it)."""
        out: dict[str, Any] = handler(self)
        if out.get("domain_space", 0) is None:
            del out["domain_space"]
        return out

    @property
    def origin(self) -> str:
        """Where the spec came from (its file path), used to prefix error messages."""
        return self._origin

    @property
    def root(self) -> Path:
        """The folder relative data paths are resolved against (the spec's, else the cwd)."""
        return self._root if self._root is not None else Path.cwd()

    def located(self, origin: str, root: Path | None) -> EnvSpec:
        """Record where the spec came from (for messages and relative paths); returns self."""
        self._origin = origin
        self._root = root
        return self


def load_env_spec(path: str | Path) -> EnvSpec:
    """Load and type-check an env spec YAML file (data and model are checked by resolve_spec)."""
    path = Path(path)
    return load_yaml_config(EnvSpec, path).located(str(path), path.resolve().parent)
