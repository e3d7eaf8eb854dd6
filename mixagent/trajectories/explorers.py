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

* ``mixture`` — structured mixtures, where good continual pre-training mixtures live: one plan
  per episode, drawn at ``reset`` from the seed: a source-field share (``static``: one share
  ``~ U(lo, hi)``; ``two_phase``/``ramp``: a start and an end share, each ``~ U(lo, hi)``, moved
  by :func:`mixagent.envs.shares.source_share`, the formula headroom's schedules use), and
  within each field a random non-empty subset of its domains (each kept with probability
  ``subset``) with ``Dirichlet(concentration)`` weights over the kept ones.
  ``mixture:source=0.2-0.9,subset=0.5,concentration=1,schedule=any,steps=env`` (``any``: one
  of the three shapes per episode; ``steps=env``: the episode length the worker passes at
  ``reset``, else ``steps=N``). ``act`` reads the step index from ``info["step"]``, so it is
  stateless, and deterministic given the plan (branch alternatives are perturbations of it).

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

from mixagent.envs.shares import SHAPES, source_share
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

    An explorer whose ``reset`` takes a ``num_steps`` keyword receives the episode's length (the
    env's ``cpt.num_steps``; it may differ between the scenarios of a family).

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


class MixtureExplorer:
    """One structured mixture plan per episode: source share (static or scheduled) times a sparse
    within-source mixture plus the rest times a sparse within-target mixture (module docstring).
    """

    stateless = True  # the step index comes from info["step"]; the plan is fixed at reset
    stochastic = False  # act is deterministic given the plan: branches perturb it instead
    SCHEDULES = ("static", *SHAPES, "any")

    def __init__(self, source: str | tuple[float, float] = "0.2-0.9", subset: float = 0.5,
                 concentration: float = 1.0, schedule: str = "any", steps: str | int = "env"):
        lo, hi = _share_range(source)
        if not 0 < subset <= 1:
            raise ConfigError(f"mixture: subset is the probability of keeping each domain; it "
                              f"must be in (0, 1], got {subset:g} (1 keeps every domain)")
        if not concentration > 0 or not np.isfinite(concentration):
            raise ConfigError(f"mixture: concentration must be a positive number, got "
                              f"{concentration:g} (1: uniform on the kept domains' simplex)")
        if schedule not in self.SCHEDULES:
            raise ConfigError(f"mixture: schedule must be one of {', '.join(self.SCHEDULES)}, "
                              f"got {schedule!r}")
        self.lo, self.hi, self.subset, self.concentration = lo, hi, subset, concentration
        self.schedule = schedule
        self.steps = _steps_option(steps)
        self.name = (f"mixture:source={lo:g}-{hi:g},subset={subset:g},"
                     f"concentration={concentration:g},schedule={schedule},"
                     f"steps={'env' if self.steps is None else self.steps}")
        self.shape, self.start, self.end = "static", 0.0, 0.0
        self.num_steps: int | None = None
        self._src = self._tgt = np.zeros(0)
        self._t = 0

    def reset(self, domain_names: Sequence[str], is_target: np.ndarray, seed: int,
              num_steps: int | None = None) -> None:
        """Draw the episode's plan from ``seed``. ``num_steps``: the episode's length (the
        worker passes the env's); an explicit ``steps=N`` option takes precedence."""
        tgt = np.asarray(is_target, dtype=bool).reshape(-1)
        if tgt.size != len(domain_names):
            raise ConfigError(f"mixture: {len(domain_names)} domain names but {tgt.size} "
                              "is_target flags")
        self.num_steps = self.steps if self.steps is not None else \
            (int(num_steps) if num_steps is not None else None)
        if self.schedule != "static" and (self.num_steps is None or self.num_steps < 1):
            raise ConfigError(f"explorer {self.name}: schedule {self.schedule!r} needs the "
                              "episode's length; the caller did not pass num_steps to reset, so "
                              "give steps=N (or use schedule=static)")
        rng = np.random.default_rng(seed)
        # fixed draw order, whatever the shape: the shape, two shares, then each field's plan
        shapes = ("static", *SHAPES)
        self.shape = shapes[int(rng.integers(len(shapes)))] if self.schedule == "any" \
            else self.schedule
        start, end = rng.uniform(self.lo, self.hi, size=2)
        self.start, self.end = float(start), float(end if self.shape != "static" else start)
        self._src = self._field(rng, ~tgt)
        self._tgt = self._field(rng, tgt)
        self._t = 0

    def _field(self, rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
        """Weights summing to 1 on a random non-empty subset of ``mask`` (zeros if it is empty)."""
        w = np.zeros(mask.size)
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return w
        keep = rng.random(idx.size) < self.subset
        if not keep.any():
            keep[int(rng.integers(idx.size))] = True
        kept = idx[keep]
        d = rng.dirichlet(np.full(kept.size, self.concentration))
        if not np.isfinite(d).all() or d.sum() <= 0:  # tiny concentrations can underflow
            d = np.ones(kept.size)
        w[kept] = d / d.sum()
        return w

    def share(self, step: int) -> float:
        """The plan's source share at step ``step`` (0-based)."""
        if self.shape == "static":
            return self.start
        assert self.num_steps is not None
        return source_share(self.shape, self.start, self.end, step, self.num_steps)

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        step = info.get("step")
        t = int(step) if step is not None else self._t
        self._t = t + 1
        if not self._tgt.any():
            return self._src.copy()
        if not self._src.any():
            return self._tgt.copy()
        s = self.share(t)
        return s * self._src + (1.0 - s) * self._tgt


def _share_range(text: str | tuple[float, float]) -> tuple[float, float]:
    """``LO-HI`` (or one share ``S``, meaning ``S-S``) with ``0 <= LO <= HI <= 1``."""
    fix = "write source=LO-HI with 0 <= LO <= HI <= 1, e.g. source=0.5-0.7 (or source=0.6)"
    if isinstance(text, str):
        lo_text, sep, hi_text = text.strip().partition("-")
        try:
            lo = float(lo_text)
            hi = float(hi_text) if sep else lo
        except ValueError:
            raise ConfigError(f"mixture: source={text!r} is not a share range; {fix}") from None
    else:
        lo, hi = (float(v) for v in text)
    if not (0 <= lo <= 1 and 0 <= hi <= 1):
        raise ConfigError(f"mixture: source shares must lie in [0, 1], got {lo:g}-{hi:g}; {fix}")
    if lo > hi:
        raise ConfigError(f"mixture: source range {lo:g}-{hi:g} has LO > HI; {fix}")
    return lo, hi


def _steps_option(steps: str | int) -> int | None:
    """``env`` (None: the length passed at reset) or a positive number of steps."""
    if isinstance(steps, str) and steps.strip() == "env":
        return None
    try:
        n = int(steps)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"mixture: steps must be 'env' (the episode length the env gives) or "
                          f"a positive integer, got {steps!r}")
    return n


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
register_explorer("mixture", lambda arg: MixtureExplorer(**_options(
    "mixture", arg, {"source": str, "subset": float, "concentration": float, "schedule": str,
                     "steps": str})))


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
            "'mixagent collect' does), or use random_walk, uniform or mixture")
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
