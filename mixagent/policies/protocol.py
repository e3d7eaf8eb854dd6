"""The one protocol for everything that sets domain weights: :class:`MixingPolicy`.

A fixed mixture, an online heuristic from the literature and a learned agent look the same to a
caller (stable-baselines3's lesson: one surface across very different algorithms)::

    policy.reset(space, seed)            # a new run on a domain space
    w = policy.act(obs)                  # observation -> weights on the simplex (float64, K)
    policy.feedback(train_loss=...)      # optional training signal between decisions
    policy.save(dir); load_policy(dir)   # config.json (+ model.safetensors) + README.md

``obs`` is the environment's observation (:mod:`mixagent.envs.observation`): the proxy env, the
evaluation runner and the production CPT callback all build it the same way, so a policy runs
unchanged in all three. The domain space is passed at ``reset`` and never baked into the object,
so one policy instance can be reset onto spaces of different sizes.

Policies are found by a ``kind`` string (the registry below, keyed like ``config.json``'s
``kind``) and by spec strings: ``baseline:NAME[?k=v&k=v]`` (``baseline:fixed_ratio?source=0.3``)
or ``policy:DIR`` (a saved policy directory).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl

import numpy as np
from pydantic import ValidationError

from mixagent.config import StrictModel, format_validation_error
from mixagent.data.space import DomainSpace
from mixagent.errors import ConfigError
from mixagent.policies.format import CONFIG_NAME, POLICY_FORMAT, read_config, read_tensors, save_policy_dir

log = logging.getLogger(__name__)


def check_weights(w: np.ndarray, k: int, who: str) -> np.ndarray:
    """Assert a policy's output is on the simplex (a bug, not user error, if not)."""
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (k,) or not np.isfinite(w).all() or (w < 0).any() or abs(w.sum() - 1.0) > 1e-6:
        raise RuntimeError(f"{who} produced invalid weights {w!r} for {k} domains")
    return w


P = TypeVar("P", bound=StrictModel)


class MixingPolicy(ABC):
    """Anything that sets domain weights. Subclasses set ``kind`` and ``Params``.

    ``Params`` (a pydantic :class:`~mixagent.config.StrictModel`) holds everything that defines
    the policy apart from learned tensors; it is what ``config.json`` stores under ``params``.
    Run state (the domain space, online estimates, history) lives in attributes that ``reset``
    rebuilds, so a saved policy never carries one run's state into another.
    """

    kind: ClassVar[str]
    Params: ClassVar[type[StrictModel]]

    def __init__(self, params: StrictModel | None = None, **kwargs: Any):
        if params is None:
            params = _validate(self.Params, kwargs, f"{self.kind} parameters")
        elif kwargs:
            raise TypeError("pass either params or keyword arguments, not both")
        self.params = params
        self.space: DomainSpace | None = None
        self.seed: int = 0
        self.provenance: dict[str, Any] = {}

    # -- the protocol ----------------------------------------------------------------------------
    def reset(self, space: DomainSpace, seed: int | None = None) -> None:
        """Start a new run on ``space``; ``seed`` fixes any randomness of the policy."""
        self.space = space
        self.seed = 0 if seed is None else int(seed)
        self._reset()

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Domain weights for the next re-weighting step (float64, non-negative, sum 1)."""
        if self.space is None:
            raise RuntimeError(f"{type(self).__name__}.act() before reset(space, seed)")
        dom = np.asarray(obs["domains"])
        k = self.space.num_domains
        if dom.shape[0] != k:
            raise ConfigError(f"observation has {dom.shape[0]} domains but the policy was reset on "
                              f"{k}; call reset() with the environment's domain space")
        return check_weights(self._act(obs), k, type(self).__name__)

    def feedback(self, *, train_loss: float | None = None,  # noqa: B027 - optional hook
                 domain_train_losses: np.ndarray | None = None) -> None:
        """Training signal of the step just taken (mean loss; per-domain losses if the trainer has
        them). Ignored by policies that only read observations."""

    def state_dict(self) -> dict[str, Any]:
        """The run state that ``act`` and ``feedback`` have built since ``reset``, as plain JSON
        values (numbers, lists, strings, dicts), exact to the bit.

        A resumed CPT run stores it in its checkpoint and loads it instead of replaying the run's
        decisions, so resuming is exact even for a policy that is not a deterministic function of
        its inputs. The domain space and seed are not part of it: they come with ``reset``.
        A policy without run state (static mixtures) returns ``{}``.
        """
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output; call after ``reset(space, seed)`` with the
        space and seed of the run that produced it."""
        if state:
            raise ConfigError(f"{type(self).__name__} keeps no run state but was given one "
                              f"(keys {sorted(state)}); it was saved by another policy")

    # -- to implement ----------------------------------------------------------------------------
    def _reset(self) -> None:  # noqa: B027 - optional hook
        """Rebuild run state after ``self.space`` / ``self.seed`` are set."""

    @abstractmethod
    def _act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray: ...

    # -- serialisation ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The ``config.json`` content (subclasses with tensors add architecture details)."""
        params = self.params.model_dump(mode="json")
        # options added after policies were first cached: written only when set, so the config
        # of a policy that does not use them -- and the policy id keying cached evaluation
        # episodes -- is what it was before they existed
        fields = type(self.params).model_fields
        for name in getattr(type(self.params), "written_when_set", ()):
            if getattr(self.params, name) == fields[name].default:
                params.pop(name, None)
        return {"format": POLICY_FORMAT, "kind": self.kind, "params": params,
                "provenance": self.provenance}

    def tensors(self) -> dict[str, Any]:
        """Learned tensors to store in ``model.safetensors`` (none for rule-based policies)."""
        return {}

    def save(self, path: str | Path, card: str | None = None) -> Path:
        """Write the policy directory (atomically); returns its path."""
        return save_policy_dir(Path(path), self.config(), self.tensors(), card)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], tensors: Mapping[str, Any]) -> MixingPolicy:
        """Rebuild from ``config.json`` content and loaded tensors (inverse of :meth:`save`)."""
        p = cls(_validate(cls.Params, dict(config.get("params", {})), f"{cls.kind} params"))
        p.provenance = dict(config.get("provenance", {}))
        return p

    def describe(self) -> str:
        """A one-line description for tables and logs: the kind and its non-default parameters."""
        default = type(self.params)().model_dump() if _constructible(type(self.params)) else {}
        args = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in self.params.model_dump().items()
                         if not isinstance(v, dict | list) and default.get(k, object()) != v)
        return f"{self.kind}({args})" if args else self.kind

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


def _constructible(cls: type[StrictModel]) -> bool:
    try:
        cls()
    except ValidationError:
        return False
    return True


def _validate(cls: type[P], data: Mapping[str, Any], where: str) -> P:
    try:
        return cls.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, where)) from None


# -- registry ------------------------------------------------------------------------------------
_KINDS: dict[str, type[MixingPolicy]] = {}
#: modules that register kinds when imported (kept lazy: the agent imports torch)
_MODULES = ("mixagent.policies.static", "mixagent.policies.heuristics",
            "mixagent.policies.benchmark_heuristics", "mixagent.policies.regmix",
            "mixagent.policies.agent")
T = TypeVar("T", bound=type[MixingPolicy])


def register_policy(cls: T) -> T:
    """Class decorator: make ``cls.kind`` loadable from ``config.json`` and spec strings."""
    other = _KINDS.get(cls.kind)
    if other is not None and other is not cls:
        raise ValueError(f"policy kind {cls.kind!r} is registered twice ({other} and {cls})")
    _KINDS[cls.kind] = cls
    return cls


def policy_kinds() -> dict[str, type[MixingPolicy]]:
    """Every registered kind (importing the built-in policy modules first)."""
    import importlib

    for mod in _MODULES:
        importlib.import_module(mod)
    return dict(_KINDS)


def policy_class(kind: str) -> type[MixingPolicy]:
    kinds = _KINDS if kind in _KINDS else policy_kinds()
    if kind not in kinds:
        raise ConfigError(f"unknown policy kind {kind!r}; known: {', '.join(sorted(kinds))}")
    return kinds[kind]


def load_policy(path: str | Path) -> MixingPolicy:
    """Load a policy directory written by :meth:`MixingPolicy.save` (safetensors, never pickle)."""
    path = Path(path)
    config = read_config(path)
    cls = policy_class(str(config["kind"]))
    needs = "architecture" in config or cls.tensors is not MixingPolicy.tensors
    return cls.from_config(config, read_tensors(path, config, required=needs))


#: baselines resolvable as ``baseline:NAME`` (learned agents are loaded with ``policy:DIR``)
BASELINES: tuple[str, ...] = ("uniform", "tokens", "target_only", "fixed_ratio", "doremi", "odm",
                              "velocitune", "alignment", "odm_benchmark", "regmix")


def _coerce(value: str) -> Any:
    low = value.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(value)
        except ValueError:
            pass
    if "," in value:
        return [_coerce(v) for v in value.split(",")]
    return value


def _looks_like_path(text: str) -> bool:
    """Whether a spec word was meant as a path (baseline names have no separators or dots)."""
    return "/" in text or "\\" in text or text.startswith(("~", ".")) or Path(text).expanduser().exists()


def policy_spec_error(spec: str, name: str, choices: Sequence[str] = BASELINES, *,
                      is_path: bool | None = None) -> ConfigError:
    """The error for ``name`` (from ``spec``) naming neither a known baseline nor a saved policy.

    Why one function: a mistyped path without ``policy:`` used to be reported as an unknown
    baseline, which sends the user hunting through baseline names. A word that looks like a path
    gets told whether it exists and what it is (a policy directory to write as ``policy:PATH``,
    a file inside one, a directory without ``config.json``); any other word gets the baseline
    names and, when one is close, a suggestion. :mod:`mixagent.evaluation.policies` raises the
    same messages (with its extra tuned baselines in ``choices``). ``is_path`` says whether
    ``name`` can only be a path (after ``policy:``); None guesses from its look.
    """
    names = ", ".join(choices)
    path = Path(name.strip()).expanduser()
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        return ConfigError(f"policy spec {spec!r}: {name} is a saved policy directory, not a baseline; "
                           f"write policy:{name}")
    if path.is_file() and (path.parent / CONFIG_NAME).is_file():
        return ConfigError(f"policy spec {spec!r}: {name} is a file inside the policy directory "
                           f"{path.parent}; name the directory: policy:{path.parent}")
    if path.is_dir():
        return ConfigError(f"policy spec {spec!r}: {path} is a directory but not a saved policy (no "
                           f"{CONFIG_NAME} in it); name a directory written by 'mixagent train' or "
                           "MixingPolicy.save() as policy:DIR")
    if path.exists():
        return ConfigError(f"policy spec {spec!r}: {path} is a file, not a policy directory; name a "
                           "directory written by 'mixagent train' as policy:DIR")
    import difflib

    close = difflib.get_close_matches(path.name, list(choices), n=1, cutoff=0.6)
    hint = f" (did you mean baseline:{close[0]}?)" if close else ""
    if is_path or (is_path is None and _looks_like_path(name)):
        return ConfigError(f"policy spec {spec!r}: no policy directory at {path}: it does not exist "
                           f"(relative paths start at the current directory, {Path.cwd()}){hint}; check "
                           "the path, train a policy with 'mixagent train', or name a baseline as "
                           f"baseline:NAME with NAME one of {names}")
    return ConfigError(f"policy spec {spec!r}: unknown baseline {name!r}{hint} (and no directory of "
                       f"that name here); choose from {names}, or name a saved policy directory as "
                       "policy:DIR")


def resolve_policy(spec: str | MixingPolicy) -> MixingPolicy:
    """A policy from ``baseline:NAME[?k=v&...]``, ``policy:DIR``, a bare baseline name or a
    directory path; an instance is returned as is."""
    if isinstance(spec, MixingPolicy):
        return spec
    text = spec.strip()
    scheme, sep, rest = text.partition(":")
    if not sep:
        scheme, rest = ("policy", text) if Path(text).is_dir() else ("baseline", text)
    if scheme == "policy":
        if not Path(rest).expanduser().is_dir():
            raise policy_spec_error(spec, rest, is_path=True)
        return load_policy(Path(rest).expanduser())
    if scheme != "baseline":
        raise ConfigError(f"policy spec {spec!r}: use 'baseline:NAME[?key=value&...]' (NAME one of "
                          f"{', '.join(BASELINES)}) or 'policy:DIR'")
    name, _, query = rest.partition("?")
    name = name.strip()
    if name not in BASELINES:
        raise policy_spec_error(spec, name)
    kwargs = {k: _coerce(v) for k, v in parse_qsl(query, keep_blank_values=True, strict_parsing=False)}
    if query and not kwargs:
        raise ConfigError(f"policy spec {spec!r}: parameters must look like '?key=value&key=value'")
    return policy_class(name)(**kwargs)


@dataclass
class StepRecord:
    """One decision of a policy in an episode, and what the environment reported after it."""

    step: int
    weights: np.ndarray
    reward: float
    scores: dict[str, float]
    losses: np.ndarray
    train_loss: float
    wall_time: float
    decision_time: float


@dataclass
class EpisodeResult:
    """A policy's episode: per-step records plus the final scores (the return is scale × the
    final balanced score)."""

    policy: str
    seed: int
    steps: list[StepRecord] = field(default_factory=list)
    observations: list[dict[str, np.ndarray]] = field(default_factory=list)

    @property
    def total_reward(self) -> float:
        return float(sum(s.reward for s in self.steps))

    @property
    def final_scores(self) -> dict[str, float]:
        return dict(self.steps[-1].scores) if self.steps else {"source": 0.0, "target": 0.0,
                                                                 "balanced": 0.0}

    @property
    def weights(self) -> np.ndarray:
        return np.stack([s.weights for s in self.steps])

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "seed": self.seed, "return": self.total_reward,
                "final_scores": self.final_scores,
                "steps": [{"step": s.step, "weights": s.weights.tolist(), "reward": s.reward,
                           "scores": s.scores, "train_loss": s.train_loss,
                           "wall_time": s.wall_time, "decision_time": s.decision_time}
                          for s in self.steps]}


def run_episode(policy: MixingPolicy, env: Any, seed: int, *,
                space: DomainSpace | None = None, policy_seed: int | None = None,
                keep_observations: bool = False,
                on_step: Callable[[StepRecord], None] | None = None) -> EpisodeResult:
    """Run ``policy`` through one episode of a :class:`ProxyCPTEnv` with exact weights.

    ``env.reset(seed=seed)`` fixes the data order, so every policy evaluated with the same seed
    sees the same data stream; ``policy_seed`` (default ``seed``) seeds the policy. Weights are
    applied with ``step_weights`` (no action map, no floor), and each step's training loss is
    fed back to the policy. Evaluation and the CPT integration reuse this loop's order:
    ``act`` → train → ``feedback`` → observe.
    """
    import time

    base = getattr(env, "unwrapped", env)
    space = space or DomainSpace.from_env(base)
    policy.reset(space, seed if policy_seed is None else policy_seed)
    obs, _ = base.reset(seed=seed)
    result = EpisodeResult(policy=policy.describe(), seed=seed)
    if keep_observations:
        result.observations.append(obs)
    done = False
    while not done:
        t0 = time.perf_counter()
        w = policy.act(obs)
        dt = time.perf_counter() - t0
        obs, reward, terminated, truncated, info = base.step_weights(w)
        policy.feedback(train_loss=float(info["train_loss"]))
        rec = StepRecord(int(info["step"]), np.asarray(info["weights"], dtype=np.float64),
                         float(reward), dict(info["scores"]), np.asarray(info["losses"]),
                         float(info["train_loss"]), float(info["wall_time"]), dt)
        result.steps.append(rec)
        if keep_observations:
            result.observations.append(obs)
        if on_step is not None:
            on_step(rec)
        done = terminated or truncated
    return result
