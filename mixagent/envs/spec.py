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
    """

    aggregator: Literal["mean", "min", "weighted"] = "mean"
    source_weight: float = Field(default=0.5, ge=0, le=1)
    source_terms: dict[str, float] = Field(default_factory=lambda: {"loss": 1.0})
    target_terms: dict[str, float] = Field(default_factory=lambda: {"loss": 1.0})
    scale: float = Field(default=1.0, gt=0)


class ActionSpec(StrictModel):
    """The action map (see :func:`mixagent.envs.actions.weights_from_action`).

    ``scale``: logits are ``scale·action``, so two domains' weights differ by at most
    ``exp(2·scale)`` (before the floor). ``floor``: every domain gets at least this weight.
    """

    scale: float = Field(default=3.0, gt=0)
    floor: float = Field(default=0.0, ge=0, lt=1)


class ObservationSpec(StrictModel):
    """Clip ranges that keep the observation space finite."""

    loss_max: float = Field(default=20.0, gt=0, description="losses clip to [0, loss_max]")
    score_max: float = Field(default=1.0, gt=0, description="scores clip to ±score_max")


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
