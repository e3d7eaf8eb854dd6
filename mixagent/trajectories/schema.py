"""The Parquet schema of a trajectory shard, and its version.

One row is one transition ``(obs, action) → (reward, new_obs)`` of a proxy CPT episode. The first
columns are RLlib's offline schema (``eps_id, obs, actions, rewards, new_obs, terminateds,
truncateds, t``), so RLlib-style readers can consume a shard directly; the rest are mixagent's own
(applied weights, evaluation feedback, branching, provenance, timing). See docs/TRAJECTORIES.md.

Observations are stored *flattened* (``gymnasium.spaces.flatten`` of the env's ``Dict`` space:
``domains`` row-major ``[K, F]`` first, then ``global``), as float32 lists — the layout
``FlattenObservation`` gives and RLlib's new stack expects for a ``Dict`` observation. The layout
(feature names, shapes) is written into the dataset card and :func:`observation_layout` rebuilds
the ``Dict`` from a row.

Columns split into *deterministic* ones (identical whenever the same collection seed and episode
index are collected again, on any worker) and *timing* ones (wall times, which worker ran it);
resume tests and dataset comparisons use :data:`DETERMINISTIC_COLUMNS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

#: bump when a column is added, removed or changes meaning; readers refuse other versions,
#: except the older ones listed in :data:`READABLE_TAGS` (upgraded on read)
SCHEMA_VERSION = 2
SCHEMA_TAG = f"mixagent.trajectories/{SCHEMA_VERSION}"
#: version 1 lacks ``scenario`` (collections of one env spec, before scenario families): its
#: shards are read with ``scenario = ""``, so collections and agents shipped before stay usable
SCHEMA_TAG_V1 = "mixagent.trajectories/1"
READABLE_TAGS: tuple[str, ...] = (SCHEMA_TAG, SCHEMA_TAG_V1)
#: columns a version-1 shard lacks, with the value they get on read
V1_MISSING: dict[str, str] = {"scenario": ""}

#: Parquet key-value metadata keys written into every shard's footer
META_SCHEMA = b"mixagent.schema"
META_SPEC_HASH = b"mixagent.env_spec_hash"
META_CONFIG_HASH = b"mixagent.config_hash"
META_EPISODE = b"mixagent.episode"

RLLIB_COLUMNS: tuple[str, ...] = (
    "eps_id", "obs", "actions", "rewards", "new_obs", "terminateds", "truncateds", "t",
)

_F32_LIST = pa.list_(pa.float32())
_F64_LIST = pa.list_(pa.float64())
_METRICS = pa.map_(pa.string(), pa.float64())

#: (name, type, meaning) — the single source of truth for the schema and for the docs table
COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    # RLlib offline schema
    ("eps_id", pa.string(), "episode id: '<collection id>-<episode index, 6 digits>'"),
    ("obs", _F32_LIST, "observation before the step, flattened (layout in the card)"),
    ("actions", _F32_LIST, "the env action: one logit per domain in [-1, 1]"),
    ("rewards", pa.float64(), "reward of the step (scale x change of the balanced score)"),
    ("new_obs", _F32_LIST, "observation after the step, flattened"),
    ("terminateds", pa.bool_(), "the episode's CPT budget is spent after this step"),
    ("truncateds", pa.bool_(), "always false (episodes are never cut short)"),
    ("t", pa.int64(), "re-weighting step index within the episode (0-based)"),
    # mixagent
    ("episode", pa.int64(), "episode index within the collection (decides its seeds)"),
    ("branch_id", pa.int32(), "which of the step's K branches (0 = the explorer's own action)"),
    ("num_branches", pa.int32(), "K: branches tried at this step (1 without branching)"),
    ("parent_branch", pa.int32(), "branch id at t-1 that this row's start state continued from (-1 at t=0)"),
    ("is_continuation", pa.bool_(), "the episode continued from this branch's end state"),
    ("weights", _F64_LIST, "domain weights applied (the action mapped onto the simplex)"),
    ("proposed_weights", _F64_LIST, "weights the explorer proposed (before the action map's limits)"),
    ("losses", _F64_LIST, "held-out loss per domain after the step (nats/token)"),
    ("source_score", pa.float64(), "source-field score after the step (0 = base)"),
    ("target_score", pa.float64(), "target-field score after the step (0 = base)"),
    ("balanced_score", pa.float64(), "their aggregate; the reward is its change"),
    ("terms", _METRICS, "normalised reward terms, e.g. 'target.loss'"),
    ("task_metrics", _METRICS, "task metrics after the step, e.g. 'arith.exact_match'"),
    ("train_loss", pa.float64(), "mean training loss over the step's optimizer steps"),
    ("tokens", pa.int64(), "tokens trained in the episode up to and including this step"),
    ("domain_names", pa.list_(pa.string()), "domains in action / observation order"),
    ("env_spec_hash", pa.string(), "hash of the env spec (semantics + data content); in a "
     "family collection, of the episode's scenario"),
    ("scenario", pa.string(), "scenario id ('<family>-<8 hex>') of a family collection's episode; "
     "'' for a collection of one env spec"),
    ("explorer", pa.string(), "explorer that chose this episode's actions"),
    ("env_seed", pa.int64(), "the env's reset seed for this episode"),
    ("explorer_seed", pa.int64(), "the explorer's seed for this episode"),
    ("batched", pa.bool_(), "branch trained in one batched computation with its siblings"),
    # timing (not deterministic)
    ("wall_time", pa.float64(), "seconds this transition cost (batched branches: their share)"),
    ("train_time", pa.float64(), "seconds of training (share, when batched)"),
    ("eval_time", pa.float64(), "seconds of evaluation (share, when batched)"),
    ("worker", pa.string(), "which worker produced the episode"),
)

TIMING_COLUMNS: tuple[str, ...] = ("wall_time", "train_time", "eval_time", "worker")
DETERMINISTIC_COLUMNS: tuple[str, ...] = tuple(c for c, _, _ in COLUMNS if c not in TIMING_COLUMNS)


def arrow_schema() -> pa.Schema:
    """The Arrow schema of a shard (without the per-shard footer metadata)."""
    return pa.schema([pa.field(name, typ, nullable=False) for name, typ, _ in COLUMNS])


def upgrade_table(table: pa.Table, tag: str, columns: list[str] | None = None) -> pa.Table:
    """A table read from a shard of an older readable schema, in the current one.

    Only version 1 is older: its rows get ``scenario = ""`` (they come from one env spec). The
    column goes where the current schema has it, so full reads match :func:`arrow_schema`;
    ``columns``: only those were read (a missing one is added only if asked for).
    """
    if tag == SCHEMA_TAG:
        return table
    names = [n for n, _, _ in COLUMNS]
    for col, value in V1_MISSING.items():
        if col in table.column_names or (columns is not None and col not in columns):
            continue
        pos = sum(1 for n in names[: names.index(col)] if n in table.column_names)
        table = table.add_column(pos, pa.field(col, pa.string(), nullable=False),
                                 pa.array([value] * table.num_rows, pa.string()))
    return table


def shard_metadata(spec_hash: str, config_hash: str, episode: int) -> dict[bytes, bytes]:
    """Footer metadata that makes a shard self-describing (checked on every read)."""
    return {
        META_SCHEMA: SCHEMA_TAG.encode(),
        META_SPEC_HASH: spec_hash.encode(),
        META_CONFIG_HASH: config_hash.encode(),
        META_EPISODE: str(int(episode)).encode(),
    }


def rows_to_table(rows: list[dict[str, Any]], spec_hash: str, config_hash: str,
                  episode: int) -> pa.Table:
    """Build a shard table from row dicts (keys = :data:`COLUMNS`), with footer metadata.

    Maps (``terms``, ``task_metrics``) are given as ``dict[str, float]``.
    """
    schema = arrow_schema()
    data: dict[str, list[Any]] = {name: [] for name, _, _ in COLUMNS}
    for row in rows:
        missing = data.keys() - row.keys()
        if missing:
            raise KeyError(f"transition row lacks columns {sorted(missing)}")
        for name in data:
            v = row[name]
            if name in ("terms", "task_metrics"):
                v = sorted((str(k), float(x)) for k, x in v.items())
            data[name].append(v)
    table = pa.Table.from_pydict(data, schema=schema)
    return table.replace_schema_metadata(shard_metadata(spec_hash, config_hash, episode))


def table_to_ipc(table: pa.Table) -> bytes:
    """A shard table as one Arrow IPC stream (schema and footer metadata included): how a Ray
    worker returns it. Ray's own serialiser for Arrow tables walks every column in Python
    (~1.7 ms a table each way on the micro spec, a tenth of a millisecond-scale episode); one
    IPC buffer costs ~0.03 ms and is plain bytes — a lossless format, not a pickle."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def table_from_ipc(data: bytes) -> pa.Table:
    """The table :func:`table_to_ipc` encoded (same rows, types and metadata)."""
    return pa.ipc.open_stream(data).read_all()


def warm_up() -> None:
    """Import now what a process's first shard table would import: pyarrow imports pandas on
    the first ``pa.array`` (~0.5 CPU-seconds). Collection calls this during setup, in workers
    and in the driver (which rebuilds the tables workers send), so the cost is counted once as
    setup and not inside the first episode's time."""
    rows_to_table([], "", "", 0)


def observation_layout(domain_features: list[str], global_features: list[str],
                       num_domains: int) -> dict[str, Any]:
    """The description of the flattened observation written into the card."""
    return {
        "flatten": "gymnasium.spaces.flatten of Dict(domains=Box(K, F), global=Box(G))",
        "order": ["domains", "global"],
        "domains": {"shape": [num_domains, len(domain_features)], "features": domain_features},
        "global": {"shape": [len(global_features)], "features": global_features},
        "size": num_domains * len(domain_features) + len(global_features),
    }


def env_observation_layout(features: Sequence[str], num_domains: int) -> dict[str, Any]:
    """The card's layout of an env whose ``observation.features`` are ``features``: the feature
    names from the env's own definition (:func:`mixagent.envs.observation.feature_layout`), so
    a collection with the optional groups on records them, and one without records exactly
    v1's layout (no ``groups`` key)."""
    from mixagent.envs.observation import FEATURE_GROUPS, feature_layout

    lay = feature_layout(features)
    out = observation_layout(list(lay.domains), list(lay.globals), num_domains)
    if features:
        out["groups"] = [g for g in FEATURE_GROUPS if g in features]
    return out


def schema_table_markdown() -> str:
    """The column table for docs/TRAJECTORIES.md and the card's README."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{n}` | `{t}` | {d} |" for n, t, d in COLUMNS]
    return "\n".join(lines)
