"""The scenarios of an evaluation: env spec files resolved (cheaply, no training) and identified.

A scenario is known by its env spec's ``name`` (its *key*; ``name@hash`` when two specs share a
name) and by its env-spec hash (:mod:`mixagent.trajectories.identity`), which keys the episode
cache: a changed spec or changed data gets new episodes, a renamed or moved one does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mixagent.errors import ConfigError


@dataclass
class Scenario:
    key: str
    name: str
    path: str
    spec_hash: str
    space: Any  # mixagent.policies.protocol.DomainSpace
    spec_payload: dict[str, Any]  # what a worker needs to rebuild the env
    objective_alias: str | None = None  # the spec hash without the `objective` group, if it has it

    @property
    def mixing_hash(self) -> str:
        """What decides the episodes of a policy blind to the ``objective`` group: the spec hash
        without that group (it changes only the observation). Seeds the scenario's random tuning
        mixtures, so observing the objective does not change RegMix's runs."""
        return self.objective_alias or self.spec_hash

    @property
    def num_domains(self) -> int:
        return int(self.space.num_domains)

    def to_dict(self) -> dict[str, Any]:
        roles = list(self.space.roles)
        return {"key": self.key, "name": self.name, "path": self.path, "spec_hash": self.spec_hash,
                "num_domains": self.num_domains, "num_source": roles.count("source"),
                "num_target": roles.count("target"), "space": self.space.to_dict()}


def _objective_alias(resolved: Any) -> str | None:
    """The hash of the same spec without the ``objective`` observation group, for a spec that
    observes it: the group is constant and changes nothing but the observation, so an episode of a
    policy that does not read it is the episode cached under this hash (the evaluation's cache
    reuses it; docs/EVALUATION.md)."""
    from mixagent.trajectories.identity import resolved_spec_hash

    spec = resolved.spec
    if "objective" not in spec.observation.features:
        return None
    features = [f for f in spec.observation.features if f != "objective"]
    blind = spec.model_copy(update={"observation": spec.observation.model_copy(update={"features": features})})
    return resolved_spec_hash(SimpleNamespace(spec=blind, data=resolved.data))


def load_scenarios(paths: list[str]) -> list[Scenario]:
    """Resolve every env spec (errors name the file and key); duplicates are listed once."""
    from mixagent.data.space import DomainSpace
    from mixagent.envs.setup import resolve_spec
    from mixagent.trajectories.identity import resolved_spec_hash

    out: list[Scenario] = []
    for p in paths:
        path = Path(p).expanduser()
        if not path.is_file():
            raise ConfigError(f"env spec {p!r} not found; pass an existing env spec YAML with --env "
                              "(e.g. envs/micro.yaml)")
        resolved = resolve_spec(path)
        spec = resolved.spec
        h = resolved_spec_hash(resolved)
        if any(s.spec_hash == h for s in out):
            continue
        space = DomainSpace.from_env(SimpleNamespace(resolved=resolved))
        payload = {"spec": spec.model_dump(mode="json"), "origin": spec.origin,
                   "root": str(spec.root), "spec_hash": h}
        out.append(Scenario(spec.name, spec.name, str(path), h, space, payload,
                            _objective_alias(resolved)))
    names = [s.name for s in out]
    for s in out:
        if names.count(s.name) > 1:
            s.key = f"{s.name}@{s.spec_hash[:6]}"
    return out
