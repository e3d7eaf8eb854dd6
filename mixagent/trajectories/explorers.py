"""Exploration policies for trajectory collection, behind a two-method interface.

An :class:`Explorer` is told the episode's domains and a seed (``reset``), then proposes domain
weights from the env's observation and info (``act``). It returns weights on the simplex; the
worker maps them to the env action with :func:`mixagent.envs.actions.action_from_weights`, so the
rows hold both the action and the weights actually applied.

Built in:

* ``random_walk`` — the Data Mixing Agent paper's exploration: each step's weights are drawn from
  a Dirichlet centred on the previous weights, ``Dirichlet(concentration·w_prev + min_alpha)``,
  and with probability ``jump`` from the flat ``Dirichlet(1)`` instead (a jump anywhere on the
  simplex). The first step starts uniform (``start=uniform``) or anywhere (``start=random``).
  Options: ``random_walk:concentration=50,jump=0.1,min_alpha=0.05,start=uniform``.
* ``uniform`` — independent mixtures drawn uniformly on the simplex every step
  (``Dirichlet(alpha)``, ``alpha=1``): ``uniform:alpha=1``.

Both read the previous weights from ``info["weights"]`` and keep no other state, so calling
``act`` several times at one step gives independent proposals (used by branching).

``policy:DIR`` (a saved policy, e.g. the trained agent) and ``baseline:NAME[?key=value&...]``
run a mixing policy, which lives a layer above (:mod:`mixagent.policies`). Trajectories never
import it: a caller that wants those kinds hands collection an *explorer factory* — a function
``spec -> Explorer`` — and ``mixagent collect`` passes
:func:`mixagent.policies.policy_explorers.make_explorer`, which builds ``policy:``/``baseline:`` and
delegates every other spec to :func:`make_explorer` here. A module-level function pickles by
reference, so the factory reaches Ray workers unchanged. Kinds registered in this process with
:func:`register_explorer` are built too (in-process collection only: a Ray worker sees only
kinds registered on import).

A collection may name several explorers (``--explorer random_walk@0.7 --explorer uniform@0.3``):
each episode uses one, drawn from the episode's own seed, so the choice is reproducible.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mixagent.errors import ConfigError

log = logging.getLogger(__name__)


@runtime_checkable
class Explorer(Protocol):
    """What trajectory collection needs from anything that chooses mixtures.

    ``reset(domain_names, is_target, seed)`` starts an episode; an explorer whose ``reset`` also
    takes a ``space`` keyword receives the env's :class:`~mixagent.data.space.DomainSpace`
    (fields, roles, token counts) as well. ``act(observation, info)`` returns ``K`` non-negative
    weights (normalised by the caller); ``info`` is the env's last ``info`` (``weights``,
    ``losses``, ``scores``, ``train_loss``, ``step``...).

    ``stateless``: ``act`` depends only on its arguments and the explorer's RNG, so an episode
    may continue from any branch (``--branch-select best|random``); a stateful explorer always
    continues from its own action. Optional ``stochastic`` (default false): repeated ``act``
    calls at one step give independent proposals, usable as branch alternatives; otherwise the
    alternatives are Dirichlet perturbations of the explorer's action (``act`` is called once
    per step).
    """

    name: str
    stateless: bool

    def reset(self, domain_names: Sequence[str], is_target: np.ndarray, seed: int) -> None:
        """Start an episode over these domains (``is_target``: bool per domain)."""

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        """Weights for the next re-weighting step."""


def is_stochastic(explorer: Explorer) -> bool:
    return bool(getattr(explorer, "stochastic", False))


def _previous(info: dict[str, Any], k: int) -> np.ndarray | None:
    w = np.asarray(info.get("weights", np.zeros(k)), dtype=np.float64)
    return w / w.sum() if w.shape == (k,) and w.sum() > 0 else None


class RandomWalkExplorer:
    """Dirichlet random walk on the simplex with occasional jumps (see module docstring)."""

    stateless = True
    stochastic = True

    def __init__(self, concentration: float = 50.0, jump: float = 0.1, min_alpha: float = 0.05,
                 start: str = "uniform"):
        if concentration <= 0 or min_alpha <= 0 or not 0 <= jump <= 1:
            raise ConfigError("random_walk: need concentration > 0, min_alpha > 0, 0 <= jump <= 1")
        if start not in ("uniform", "random"):
            raise ConfigError(f"random_walk: start must be 'uniform' or 'random', got {start!r}")
        self.concentration, self.jump, self.min_alpha, self.start = concentration, jump, min_alpha, start
        self.name = (f"random_walk:concentration={concentration:g},jump={jump:g},"
                     f"min_alpha={min_alpha:g},start={start}")
        self._rng = np.random.default_rng(0)
        self._k = 0

    def reset(self, domain_names: Sequence[str], is_target: np.ndarray, seed: int) -> None:
        self._k = len(domain_names)
        self._rng = np.random.default_rng(seed)

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        prev = _previous(info, self._k)
        if prev is None:
            return np.full(self._k, 1.0 / self._k) if self.start == "uniform" else \
                self._rng.dirichlet(np.ones(self._k))
        if self._rng.random() < self.jump:
            return self._rng.dirichlet(np.ones(self._k))
        return self._rng.dirichlet(self.concentration * prev + self.min_alpha)


class UniformExplorer:
    """Mixtures drawn independently from ``Dirichlet(alpha)`` every step (alpha=1: uniform)."""

    stateless = True
    stochastic = True

    def __init__(self, alpha: float = 1.0):
        if alpha <= 0:
            raise ConfigError("uniform: alpha must be positive")
        self.alpha = alpha
        self.name = f"uniform:alpha={alpha:g}"
        self._rng = np.random.default_rng(0)
        self._k = 0

    def reset(self, domain_names: Sequence[str], is_target: np.ndarray, seed: int) -> None:
        self._k = len(domain_names)
        self._rng = np.random.default_rng(seed)

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        return self._rng.dirichlet(np.full(self._k, self.alpha))


def perturb(weights: np.ndarray, rng: np.random.Generator, concentration: float,
            min_alpha: float = 0.05) -> np.ndarray:
    """A random-walk step from ``weights``: the branch alternatives of a stateful explorer."""
    w = np.asarray(weights, dtype=np.float64)
    return rng.dirichlet(concentration * w / w.sum() + min_alpha)


# -- registry ------------------------------------------------------------------------------------
ExplorerFactory = Callable[[str], Explorer]
"""Builds an explorer from a whole spec (``kind[:arg]``); what ``collect(explorer_factory=...)``
takes. Must be a module-level function to reach Ray workers."""

#: kind -> builder from the text after ``kind:`` (``""`` when there is none)
_REGISTRY: dict[str, Callable[[str], Explorer]] = {}
#: kinds provided by a layer above, through an explorer factory (named in errors only)
POLICY_KINDS = ("policy", "baseline")


def register_explorer(kind: str, factory: Callable[[str], Explorer], *, replace: bool = False) -> None:
    """Make ``--explorer kind[:arg]`` build ``factory(arg)`` (``arg``: the text after ``kind:``)."""
    if kind in _REGISTRY and not replace:
        raise ConfigError(f"explorer kind {kind!r} is already registered")
    _REGISTRY[kind] = factory


def _options(kind: str, arg: str, allowed: dict[str, type]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in arg.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in allowed:
            raise ConfigError(f"explorer {kind}: unknown option {part!r}; options are "
                              f"{', '.join(f'{k}=...' for k in allowed)}")
        try:
            out[key] = allowed[key](value)
        except ValueError:
            raise ConfigError(f"explorer {kind}: option {key}={value!r} is not a "
                              f"{allowed[key].__name__}") from None
    return out


register_explorer("random_walk", lambda arg: RandomWalkExplorer(**_options(
    "random_walk", arg, {"concentration": float, "jump": float, "min_alpha": float, "start": str})))
register_explorer("uniform", lambda arg: UniformExplorer(**_options("uniform", arg, {"alpha": float})))


def available_kinds() -> list[str]:
    """Registered explorer kinds plus the policy kinds a factory from above can add."""
    return sorted(set(_REGISTRY) | set(POLICY_KINDS))


def make_explorer(spec: str) -> Explorer:
    """Build an explorer from ``kind[:arg]`` (``random_walk:jump=0.2``, ``uniform``, ...): the
    default explorer factory. ``policy:``/``baseline:`` need the policies layer's factory."""
    kind, _, arg = spec.strip().partition(":")
    if kind not in _REGISTRY and kind in POLICY_KINDS:
        raise ConfigError(
            f"explorer {spec!r}: '{kind}:' explorers run a mixing policy; build them with "
            "mixagent.policies.policy_explorers.make_explorer (pass explorer_factory= to collect; "
            "'mixagent collect' does), or use random_walk or uniform")
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown explorer {spec!r}; choose from "
                          f"{', '.join(available_kinds())} (e.g. random_walk:jump=0.2)")
    return check_explorer(_REGISTRY[kind](arg), spec)


def check_explorer(explorer: object, spec: str) -> Explorer:
    """``explorer`` if it has the protocol's members, else a :class:`ConfigError` naming ``spec``
    (a factory's bug should not surface as an AttributeError mid-collection)."""
    if not isinstance(explorer, Explorer):
        raise ConfigError(f"explorer {spec!r}: the factory returned {explorer!r}, which lacks "
                          "name/stateless/reset/act")
    return explorer


# -- several explorers per collection ----------------------------------------------------------
@dataclass(frozen=True)
class ExplorerChoice:
    """One ``--explorer`` entry: the spec and its share of the episodes."""

    spec: str
    weight: float


def parse_explorers(specs: Sequence[str],
                    factory: ExplorerFactory | None = None) -> list[ExplorerChoice]:
    """Parse ``spec[@weight]`` entries; checks every spec builds with ``factory`` (default
    :func:`make_explorer`; errors name the entry)."""
    if not specs:
        raise ConfigError("at least one explorer is needed (e.g. --explorer random_walk)")
    build = factory or make_explorer
    out = []
    for raw in specs:
        spec, weight = raw.strip(), 1.0
        head, at, tail = spec.rpartition("@")
        if at:
            try:
                weight = float(tail)
            except ValueError:
                pass
            else:
                spec = head
        if not weight > 0:
            raise ConfigError(f"explorer {raw!r}: the share after '@' must be positive")
        build(spec)
        out.append(ExplorerChoice(spec, weight))
    return out


def choose_explorer(choices: Sequence[ExplorerChoice], rng: np.random.Generator) -> str:
    """The explorer spec for one episode (a single choice consumes no randomness)."""
    if len(choices) == 1:
        return choices[0].spec
    p = np.array([c.weight for c in choices], dtype=np.float64)
    return choices[int(rng.choice(len(choices), p=p / p.sum()))].spec
