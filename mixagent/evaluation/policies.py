"""The policies of an evaluation: spec strings → entries with an identity, a role and a payload.

* **Role.** A *learned* policy is one loaded from a directory (``policy:DIR`` or a bare path);
  a *baseline* is a ``baseline:NAME`` spec. Win rates and the transfer matrix compare learned
  policies against baselines.
* **Tuned baselines.** ``baseline:best_fixed_ratio`` and ``baseline:regmix`` (without
  parameters, or with ``?runs=N``: a tuning budget) are tuned per scenario on the tune seeds
  (:mod:`mixagent.evaluation.tuning`), so their concrete policy differs by scenario; every other
  entry is the same on every scenario.
* **Identity.** ``policy_id`` hashes the policy's ``config.json`` content without its
  ``provenance`` (what it does, not what was written about it — recording results in the card
  must not invalidate the episode cache) plus the sha256 of its tensors. A retrained or edited
  policy gets a new id, so cached episodes of the old one are never reused for it.
* **Payload.** What a worker needs to rebuild the policy: the config and the raw
  ``model.safetensors`` bytes, sent by value, so workers on other nodes need no shared
  filesystem. Rebuilding goes through safetensors and json only (never pickle).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mixagent.errors import ConfigError
from mixagent.evaluation.config import TUNED_BASELINES, regmix_budget
from mixagent.policies.format import policy_id

Role = Literal["learned", "baseline"]


@dataclass(frozen=True)
class PolicyInstance:
    """One concrete policy: what a worker rebuilds and what the episode cache is keyed by."""

    policy_id: str
    config: dict[str, Any]
    tensors: bytes | None
    describe: str

    def payload(self) -> dict[str, Any]:
        return {"policy_id": self.policy_id, "config": self.config, "tensors": self.tensors}


@dataclass
class PolicyEntry:
    """A policy as the user named it; ``instances`` maps scenario key → concrete policy (the
    same instance for all scenarios unless ``tuned``)."""

    spec: str
    label: str
    role: Role
    tuned: str | None = None  # "best_fixed_ratio" | "regmix"
    runs: int | None = None  # regmix?runs=N: its tuning budget (None: regmix_runs)
    path: Path | None = None
    instance: PolicyInstance | None = None  # untuned entries
    tuned_instances: dict[str, PolicyInstance] = field(default_factory=dict)
    trained_on: list[str] = field(default_factory=list)  # scenario names (learned)
    trained_on_hashes: list[str] = field(default_factory=list)

    @property
    def tuning_key(self) -> str | None:
        """Where its tuning is recorded (report.json ``tuning``): the kind, or ``regmix-N`` for
        a RegMix budget; None when not tuned."""
        return f"{self.tuned}-{self.runs}" if self.tuned and self.runs is not None else self.tuned

    def instance_for(self, scenario: str) -> PolicyInstance:
        if self.tuned is None:
            assert self.instance is not None
            return self.instance
        return self.tuned_instances[scenario]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"label": self.label, "spec": self.spec, "role": self.role,
                             "tuned": self.tuned, "path": str(self.path) if self.path else None}
        if self.runs is not None:
            d["runs"] = self.runs
        if self.instance is not None:
            d["policy_id"] = self.instance.policy_id
            d["describe"] = self.instance.describe
        if self.tuned_instances:
            d["per_scenario"] = {k: {"policy_id": i.policy_id, "describe": i.describe}
                                 for k, i in self.tuned_instances.items()}
        if self.role == "learned":
            d["trained_on"] = self.trained_on
            d["trained_on_hashes"] = self.trained_on_hashes
        return d


OBJECTIVE_BLIND_KINDS = frozenset({"uniform", "tokens", "target_only", "fixed_ratio", "regmix",
                                   "schedule", "doremi", "odm", "velocitune", "alignment",
                                   "odm_benchmark"})
"""Policy kinds whose actions never depend on the ``objective`` observation group: the static
ones and the schedules read no observation at all; the online rules act alike with it on and
off (tests/test_alignment.py runs every one of them both ways). A new kind is not blind until it
is added here — and to that test."""


def reads_objective(instance: PolicyInstance) -> bool:
    """Whether the policy's episodes may depend on the ``objective`` observation group: an agent
    whose features use it, or any kind not known to be blind to it (the safe answer)."""
    kind = str(instance.config.get("kind", ""))
    if kind == "agent":
        features = (instance.config.get("params") or {}).get("features") or {}
        return "objective" in (features.get("observation") or [])
    return kind not in OBJECTIVE_BLIND_KINDS


def instance_of(policy: Any) -> PolicyInstance:
    """A :class:`PolicyInstance` of an in-memory rule-based policy (no tensors)."""
    if policy.tensors():
        raise ValueError(f"{policy!r} has tensors; load it from its directory instead")
    config = json.loads(json.dumps(policy.config()))  # plain JSON types only
    return PolicyInstance(policy_id(config, None), config, None, policy.describe())


def build_policy(payload: dict[str, Any]) -> Any:
    """Rebuild a policy from :meth:`PolicyInstance.payload` (in a worker)."""
    import mixagent.evaluation.schedules  # noqa: F401  registers kind "schedule" (headroom's schedules)
    from mixagent.policies.protocol import policy_class

    config = payload["config"]
    tensors: dict[str, Any] = {}
    if payload.get("tensors"):
        from safetensors.torch import load as load_tensors

        tensors = load_tensors(payload["tensors"])
    return policy_class(str(config["kind"])).from_config(config, tensors)


def _learned(spec: str, path: Path) -> PolicyEntry:
    from mixagent.policies.format import MODEL_NAME, read_config
    from mixagent.policies.protocol import policy_spec_error
    from mixagent.policies.records import scenario_record

    if not path.is_dir():
        raise policy_spec_error(spec, str(path), _choices(), is_path=True)
    config = read_config(path)
    model = path / MODEL_NAME
    tensors = model.read_bytes() if model.is_file() else None
    inst = PolicyInstance(policy_id(config, tensors), config, tensors, "")
    pol = build_policy(inst.payload())  # proves it loads, and gives its description
    inst = PolicyInstance(inst.policy_id, config, tensors, pol.describe())
    prov = config.get("provenance") or {}
    data = prov.get("data") or {}
    names: list[str] = []
    env_spec = data.get("env_spec")
    for n in ([env_spec] if isinstance(env_spec, str) else list(env_spec or [])):
        if n and n not in names:
            names.append(str(n))
    scenario = scenario_record(config)  # the env spec it was trained with, recorded by training
    for n in [*(s.get("name") for s in prov.get("trained_on") or []), scenario.name if scenario else None]:
        if n and n not in names:
            names.append(str(n))
    label = str(prov.get("name") or path.name)
    return PolicyEntry(spec, label, "learned", path=path, instance=inst, trained_on=names,
                       trained_on_hashes=[str(h) for h in data.get("env_spec_hashes") or []])


def _choices() -> tuple[str, ...]:
    from mixagent.policies.protocol import BASELINES

    return tuple(dict.fromkeys((*BASELINES, *TUNED_BASELINES)))


def parse_policy(spec: str) -> PolicyEntry:
    """A :class:`PolicyEntry` from a spec string (see module docstring); bad specs raise
    :class:`ConfigError` saying what to write instead (the messages of
    :func:`mixagent.policies.protocol.policy_spec_error`, shared with ``resolve_policy``)."""
    from mixagent.policies.protocol import policy_spec_error, resolve_policy

    text = spec.strip()
    scheme, sep, rest = text.partition(":")
    if sep and scheme == "policy":
        return _learned(text, Path(rest).expanduser())
    if not sep or scheme != "baseline":
        path = Path(text).expanduser()
        if path.is_dir():
            return _learned(text, path)
        if text in _choices():  # a bare baseline name: here only baseline:NAME names a baseline
            raise ConfigError(f"policy {spec!r}: no policy directory {text!r} here; for the baseline "
                              f"write baseline:{text}")
        # without a scheme, a spec is a path here (a baseline is always written baseline:NAME)
        raise policy_spec_error(spec, text, _choices(), is_path=True)
    name, _, query = rest.partition("?")
    name = name.strip()
    runs = regmix_budget(text)
    if runs is not None:
        return PolicyEntry(text, f"regmix-{runs} (tuned)", "baseline", tuned="regmix", runs=runs)
    if name == "best_fixed_ratio" or (name == "regmix" and not query):
        if query:
            raise ConfigError(f"policy {spec!r}: baseline:{name} takes no parameters (the ratio grid is "
                              "set with --ratio-grid / ratio_grid)")
        label = "best fixed ratio" if name == "best_fixed_ratio" else "regmix (tuned)"
        return PolicyEntry(text, label, "baseline", tuned=name)
    if name not in _choices():
        raise policy_spec_error(spec, name, _choices())
    inst = instance_of(resolve_policy(text))
    return PolicyEntry(text, inst.describe, "baseline", instance=inst)


def parse_policies(specs: list[str]) -> list[PolicyEntry]:
    """Entries for every spec, with unique labels (``label #2`` on a clash) and no duplicates."""
    entries: list[PolicyEntry] = []
    seen: dict[str, str] = {}
    for spec in specs:
        e = parse_policy(spec)
        key = e.tuning_key or (e.instance.policy_id if e.instance else e.spec)
        if key in seen:
            raise ConfigError(f"policy {spec!r} is the same policy as {seen[key]!r}; list it once")
        seen[key] = spec
        labels = {x.label for x in entries}
        if e.label in labels:
            n = 2
            while f"{e.label} #{n}" in labels:
                n += 1
            e.label = f"{e.label} #{n}"
        entries.append(e)
    return entries
