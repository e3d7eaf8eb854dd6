"""What makes two trajectory collections comparable: the env-spec hash and the collection config.

The **env-spec hash** covers everything that decides what a transition means — the spec's
semantics (fields, domains, model, budgets, evaluation, reward, action and observation maps) and
the *content* hash of its data directory — but not its name, description, runtime settings
(device, threads) or where the data directory lies on disk. Trajectories with the same hash come
from the same MDP; trajectories with different hashes must not be mixed silently.

The **config hash** adds how actions were chosen (explorers, branching, the collection seed):
episode ``i`` of two collections with the same config hash is the same episode, which is what
makes ``--resume`` exact. The number of episodes, workers and resources are not part of it — a
collection can be extended or resumed on a different cluster.
"""

from __future__ import annotations

from typing import Any

from mixagent.config import StrictModel
from mixagent.trajectories.schema import SCHEMA_TAG
from mixagent.utils.io import sha256_json

SPEC_HASH_FORMAT = "mixagent.env-spec-hash/1"
_NOT_SEMANTIC = ("name", "description", "runtime", "data")


def env_spec_hash(spec: Any, data_content_hash: str) -> str:
    """The hash of an :class:`~mixagent.envs.spec.EnvSpec` resolved against its data (see module doc)."""
    dump = spec.model_dump(mode="json")
    payload = {k: v for k, v in dump.items() if k not in _NOT_SEMANTIC}
    payload["format"] = SPEC_HASH_FORMAT
    payload["data_content_hash"] = data_content_hash
    return sha256_json(payload)[:24]


def resolved_spec_hash(resolved: Any) -> str:
    """:func:`env_spec_hash` of a :class:`~mixagent.envs.setup.ResolvedEnv` (or an env's ``resolved``)."""
    return env_spec_hash(resolved.spec, resolved.data.manifest.content_hash)


def hash_of_spec_file(spec: Any) -> str:
    """Resolve an env spec (path or EnvSpec; cheap: no training) and hash it."""
    from mixagent.envs.setup import resolve_spec

    return resolved_spec_hash(resolve_spec(spec))


class CollectionIdentity(StrictModel):
    """The part of a collection's config that decides its rows (hashed into ``config_hash``)."""

    schema_tag: str = SCHEMA_TAG
    env_spec_hash: str
    explorers: list[str]
    seed: int
    branch: dict[str, Any]

    @property
    def config_hash(self) -> str:
        return self.config_hash_full[:16]

    @property
    def config_hash_full(self) -> str:
        return sha256_json(self.model_dump(mode="json"))
