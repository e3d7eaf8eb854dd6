"""A *domain space*: the domains a mixture is over, in action order, with what a policy may know.

Defined in the data layer because everything it holds — names, fields, roles, training tokens —
is what a data manifest (or a :class:`~mixagent.data.views.DomainView` of one) says about its
domains, and because every layer above needs it: the environment's scenarios, trajectory
collection (explorers), policies, the CPT run and evaluation.

It is built from real data, never guessed from names:

* :meth:`DomainSpace.from_data` — from a data directory or view: each domain's field, role
  (the manifest's, or ``target`` exactly for the domains of ``target_field``) and train tokens;
* :meth:`DomainSpace.from_env` — the space of a proxy environment (or its resolved spec):
  :meth:`from_data` on the env's data and domains with the spec's target field;
* :meth:`DomainSpace.from_dict` — a space recorded earlier with :meth:`DomainSpace.to_dict`
  (trajectory cards, policy provenance);
* :meth:`DomainSpace.synthetic` — made-up spaces for tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixagent.data.manifest import DataDir, Role
from mixagent.errors import ConfigError


@dataclass(frozen=True)
class DomainSpace:
    """The domains a policy assigns weights to, in action order, with what a policy may know.

    ``roles`` says which field each domain serves in this CPT scenario (``source``: retain,
    ``target``: learn); ``train_tokens`` lets static baselines weight by data size.
    """

    names: tuple[str, ...]
    fields: tuple[str, ...]
    roles: tuple[Role, ...]
    train_tokens: tuple[int, ...]
    name: str = ""  # e.g. the env spec's name, recorded in policy provenance

    def __post_init__(self) -> None:
        k = len(self.names)
        if k == 0:
            raise ConfigError("a domain space needs at least one domain")
        for attr in ("fields", "roles", "train_tokens"):
            if len(getattr(self, attr)) != k:
                raise ConfigError(f"domain space: {attr} has {len(getattr(self, attr))} entries, "
                                  f"expected {k} (one per domain)")
        bad = [r for r in self.roles if r not in ("source", "target")]
        if bad:
            raise ConfigError(f"domain space: roles must be 'source' or 'target', got {bad}")

    @property
    def num_domains(self) -> int:
        return len(self.names)

    @property
    def is_target(self) -> np.ndarray:
        return np.array([r == "target" for r in self.roles], dtype=bool)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "names": list(self.names), "fields": list(self.fields),
                "roles": list(self.roles), "train_tokens": [int(t) for t in self.train_tokens]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DomainSpace:
        """Read back :meth:`to_dict` (a card or a policy's provenance)."""
        return cls(tuple(d["names"]), tuple(d["fields"]), tuple(d["roles"]),
                   tuple(int(t) for t in d["train_tokens"]), str(d.get("name", "")))

    @classmethod
    def from_data(cls, data: DataDir, names: Sequence[str] | None = None, *,
                  target_field: str | None = None, name: str | None = None) -> DomainSpace:
        """The space of ``names`` (default: every domain) of a data directory or view.

        Roles: with ``target_field`` (a CPT scenario's choice, as in an env spec) the domains of
        that field are targets and the rest sources; without it, the manifest's roles.
        ``name`` defaults to the manifest's name.
        """
        names = tuple(data.domain_names if names is None else names)
        doms = [data.domain(d) for d in names]
        roles = tuple(d.role for d in doms) if target_field is None else \
            tuple("target" if d.field == target_field else "source" for d in doms)
        return cls(names, tuple(d.field for d in doms), roles,
                   tuple(int(d.train_tokens) for d in doms),
                   data.manifest.name if name is None else name)

    @classmethod
    def from_env(cls, env: Any) -> DomainSpace:
        """The space of a :class:`~mixagent.envs.proxy_env.ProxyCPTEnv` (or a wrapper of one) or
        of a :class:`~mixagent.envs.setup.ResolvedEnv`: the env's domains in action order,
        targets = the spec's target field, named after the spec.

        Read by attribute (``resolved.data``, ``.domains``, ``.spec``) so that this layer does
        not import the environment's.
        """
        env = getattr(env, "unwrapped", env)
        resolved = getattr(env, "resolved", env)
        spec = resolved.spec
        return cls.from_data(resolved.data, resolved.domains, target_field=spec.target_field,
                             name=spec.name)

    @classmethod
    def synthetic(cls, num_domains: int, num_target: int | None = None, seed: int = 0) -> DomainSpace:
        """A made-up space (tests, benchmarks): the first ``num_target`` domains are targets."""
        nt = max(1, num_domains // 2) if num_target is None else num_target
        rng = np.random.default_rng(seed)
        roles = tuple("target" if i < nt else "source" for i in range(num_domains))
        return cls(tuple(f"{'math' if r == 'target' else 'prose'}/d{i}" for i, r in enumerate(roles)),
                   tuple("math" if r == "target" else "prose" for r in roles), roles,
                   tuple(int(x) for x in rng.integers(1_000, 100_000, num_domains)),
                   f"synthetic-{num_domains}")
