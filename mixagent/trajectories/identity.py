"""What makes two trajectory collections comparable: the env-spec hash and the collection config.

The **env-spec hash** covers everything that decides what a transition means — the spec's
semantics (fields, domains, model, budgets, evaluation, reward, action and observation maps) and
the *content* hash of its data directory — but not its name, description, runtime settings
(device, threads) or where the data directory lies on disk. Trajectories with the same hash come
from the same MDP; trajectories with different hashes must not be mixed silently.

A benchmark added after v1 (a built-in one, one declared in a ``data build`` config or added to
an existing directory) need not be covered by the data's content hash, so its own recorded hash
(of its stored file) enters a spec's hash — but only when the spec evaluates it (``eval.tasks``
or a ``<name>.<metric>`` reward term). A spec that evaluates none of them, like every v1 spec,
keeps the hash it always had; a task set without a recorded hash (the built-in
``math_exact_match``, which the content hash covers) adds nothing either.

The **config hash** adds how actions were chosen (explorers, branching, the collection seed):
episode ``i`` of two collections with the same config hash is the same episode, which is what
makes ``--resume`` exact. The number of episodes, workers and resources are not part of it — a
collection can be extended or resumed on a different cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mixagent.config import StrictModel
from mixagent.trajectories.schema import SCHEMA_TAG
from mixagent.utils.io import sha256_json

SPEC_HASH_FORMAT = "mixagent.env-spec-hash/1"
_NOT_SEMANTIC = ("name", "description", "runtime", "data")


def env_spec_hash(spec: Any, data_content_hash: str, benchmark_hashes: Mapping[str, str] | None = None) -> str:
    """The hash of an :class:`~mixagent.envs.spec.EnvSpec` resolved against its data (see module doc).

    ``benchmark_hashes`` are the data directory's recorded benchmark hashes
    (:func:`recorded_benchmark_hashes`); only those the spec evaluates enter, and the key is left
    out when there are none, so a spec that evaluates no such benchmark hashes as it did in v1.
    """
    dump = spec.model_dump(mode="json")
    payload = {k: v for k, v in dump.items() if k not in _NOT_SEMANTIC}
    payload["format"] = SPEC_HASH_FORMAT
    payload["data_content_hash"] = data_content_hash
    used = {n: benchmark_hashes[n] for n in sorted(evaluated_benchmarks(dump)) if n in (benchmark_hashes or {})}
    if used:
        payload["benchmark_hashes"] = used
    return sha256_json(payload)[:24]


def evaluated_benchmarks(dump: Mapping[str, Any]) -> set[str]:
    """Names of the benchmarks (task sets) a spec dump evaluates: ``eval.tasks`` entries and the
    ``<name>.<metric>`` reward terms (a term can only score what is evaluated, but a spec that
    names one is about that benchmark either way)."""
    names: set[str] = set()
    evaluation = dump.get("eval") or {}
    for key in ("tasks", "benchmarks"):
        for entry in evaluation.get(key) or []:
            name = entry.get("name") if isinstance(entry, Mapping) else entry
            if isinstance(name, str):
                names.add(name)
    reward = dump.get("reward") or {}
    for key in ("source_terms", "target_terms"):
        for term in reward.get(key) or {}:
            if "." in term:
                names.add(term.rpartition(".")[0])
    return names


def recorded_benchmark_hashes(manifest: Any) -> dict[str, str]:
    """Benchmark name -> the hash its data directory records for it (``benchmarks[].sha256``, of
    its stored file). Task sets have none — v1's ``math_exact_match`` is covered by the content
    hash — and so add nothing."""
    return {b.name: b.sha256 for b in getattr(manifest, "benchmarks", None) or [] if b.sha256}


def resolved_spec_hash(resolved: Any) -> str:
    """:func:`env_spec_hash` of a :class:`~mixagent.envs.setup.ResolvedEnv` (or an env's ``resolved``)."""
    manifest = resolved.data.manifest
    return env_spec_hash(resolved.spec, manifest.content_hash, recorded_benchmark_hashes(manifest))


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
    explorer_order: str = "draw"

    @property
    def config_hash(self) -> str:
        return self.config_hash_full[:16]

    @property
    def config_hash_full(self) -> str:
        dump = self.model_dump(mode="json")
        if dump["explorer_order"] == "draw":  # left out at its default: older collections resume
            del dump["explorer_order"]
        return sha256_json(dump)


# -- scenario families ------------------------------------------------------------------------------
FAMILY_HASH_FORMAT = "mixagent.family-hash/1"


def family_hash(family: Any, manifest: Any) -> str:
    """The identity of a :class:`~mixagent.envs.family.ScenarioFamily` on its data (``manifest``).

    A family collection's ``env_spec_hash`` (collection.json, shard footers): it covers the
    base spec exactly as :func:`env_spec_hash` does, the varied dimensions, the recorded hashes
    of every benchmark a dimension may evaluate, and the sampler's version — everything that
    decides which scenario episode ``i`` gets — so resuming the same family gives exactly the
    same scenarios per episode, and any change is refused. Rows carry each scenario's own
    :func:`env_spec_hash`.
    """
    recorded = recorded_benchmark_hashes(manifest)
    dims = family.semantic_dump()
    named = {"eval": {"tasks": [t for c in dims.get("targets", []) for t in c.get("eval_tasks") or []]},
             "reward": {k: {n: 1.0 for terms in options for n in terms}
                        for k, options in (
                            ("source_terms", (dims.get("reward") or {}).get("source_terms") or []),
                            ("target_terms", [t for c in dims.get("targets", [])
                                              for t in c.get("target_terms") or []]))}}
    used = {n: recorded[n] for n in sorted(evaluated_benchmarks(named)) if n in recorded}
    return sha256_json({"format": FAMILY_HASH_FORMAT,
                        "base": env_spec_hash(family.base, manifest.content_hash, recorded),
                        "dimensions": dims, "benchmark_hashes": used})[:24]
