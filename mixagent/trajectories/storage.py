"""The on-disk layout of a trajectory collection: atomic shards, validation, quarantine, the card.

::

    NAME/
      collection.json      identity: schema, env-spec hash, config hash, explorers, branching, seed
      env_spec.json        the env spec as collected (with its origin)
      card.json            dataset card: spec, counts, returns, compute, observation layout
      README.md            the card for humans
      shards/episode-000042.parquet     one whole episode per shard, written atomically
      quarantine/          bad shards moved aside on --resume (never deleted), with the reason
      .collect.lock        held by the collection run writing here (removed when it ends)

A shard is written to a hidden temporary file in ``shards/`` and renamed into place, so a
``episode-*.parquet`` file is either complete or absent; a kill leaves at most a ``.tmp`` file,
which ``--resume`` removes. Every read checks the footer (schema tag, env-spec hash, config hash,
episode index) and the rows' structure, so a truncated, foreign or hand-edited shard is reported
with its path instead of being read silently.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mixagent.errors import DataError
from mixagent.trajectories.schema import (
    META_CONFIG_HASH,
    META_EPISODE,
    META_SCHEMA,
    META_SPEC_HASH,
    READABLE_TAGS,
    SCHEMA_TAG,
    V1_MISSING,
    arrow_schema,
    upgrade_table,
)
from mixagent.utils.io import LockHeld, atomic_text_file, exclusive_lock, write_json_atomic

COLLECTION_FILE = "collection.json"
SPEC_FILE = "env_spec.json"
CARD_FILE = "card.json"
README_FILE = "README.md"
SHARDS_DIR = "shards"
QUARANTINE_DIR = "quarantine"
LOCK_FILE = ".collect.lock"
# what a collection folder may hold; anything else (not hidden) marks a folder that is not ours
COLLECTION_ENTRIES = frozenset({COLLECTION_FILE, SPEC_FILE, CARD_FILE, README_FILE, SHARDS_DIR,
                                QUARANTINE_DIR})
COLLECTION_FORMAT = "mixagent.collection/1"
CARD_FORMAT = "mixagent.trajectory-card/1"
_SHARD_RE = re.compile(r"^episode-(\d{6,})\.parquet$")
log = logging.getLogger(__name__)


class TrajectoryError(DataError):
    """A trajectory collection or shard is missing, corrupt, foreign or inconsistent."""


@dataclass(frozen=True)
class BadShard:
    """A shard that failed validation: where it is and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class ShardScan:
    """What is in a collection's ``shards/`` folder."""

    good: dict[int, Path] = field(default_factory=dict)
    bad: list[BadShard] = field(default_factory=list)
    temporary: list[Path] = field(default_factory=list)


def shard_name(episode: int) -> str:
    return f"episode-{int(episode):06d}.parquet"


def shard_path(root: Path, episode: int) -> Path:
    return Path(root) / SHARDS_DIR / shard_name(episode)


def episode_of(path: Path) -> int | None:
    m = _SHARD_RE.match(path.name)
    return int(m.group(1)) if m else None


def write_shard(root: Path, episode: int, table: pa.Table) -> Path:
    """Write one episode's table atomically (temporary file, fsync, rename); returns its path."""
    final = shard_path(root, episode)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return final


def read_shard(path: Path, *, spec_hash: str | None = None, config_hash: str | None = None,
               columns: list[str] | None = None) -> pa.Table:
    """Read and validate a shard; raises :class:`TrajectoryError` naming the path and the problem.

    ``spec_hash`` / ``config_hash``: refuse a shard of another env spec / collection config.
    With ``columns``, only those are read and the row structure is not checked.
    """
    path = Path(path)
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
    except (OSError, pa.ArrowException) as err:
        raise TrajectoryError(f"{path}: not a readable Parquet file (truncated or corrupt?): "
                              f"{err}") from None
    episode = check_header(path, schema, spec_hash=spec_hash, config_hash=config_hash)
    named = episode_of(path)
    if named is not None and named != episode:
        raise TrajectoryError(f"{path}: holds episode {episode} but is named for episode {named}")
    tag = _tag(schema)
    read = columns
    if tag != SCHEMA_TAG and columns is not None:  # an older schema: read what it has
        read = [c for c in columns if c not in V1_MISSING]
    try:
        table = upgrade_table(pf.read(columns=read), tag, columns)
    except (OSError, ValueError, pa.ArrowException) as err:
        raise TrajectoryError(f"{path}: cannot read the data (corrupt?): {err}") from None
    if columns is None:
        check_rows(path, table, episode)
    return table


def check_table(table: pa.Table, where: str | Path, *, spec_hash: str | None,
                config_hash: str | None, episode: int) -> None:
    """Validate an in-memory shard table (what a worker returned) before it is written."""
    found = check_header(where, table.schema, spec_hash=spec_hash, config_hash=config_hash)
    if _tag(table.schema) != SCHEMA_TAG:
        raise TrajectoryError(f"{where}: schema {_tag(table.schema)!r}; new shards are written "
                              f"in {SCHEMA_TAG!r}")
    if found != episode:
        raise TrajectoryError(f"{where}: holds episode {found}, expected {episode}")
    check_rows(where, table, episode)


def check_header(where: str | Path, schema: pa.Schema, *, spec_hash: str | None,
                 config_hash: str | None) -> int:
    """Schema tag, columns and hashes of a shard's schema; returns the episode it holds."""
    meta = schema.metadata or {}
    tag = _tag(schema)
    if not tag:
        raise TrajectoryError(f"{where}: no mixagent schema tag in the footer; not a mixagent "
                              "trajectory shard")
    if tag not in READABLE_TAGS:
        raise TrajectoryError(f"{where}: schema {tag!r}, this mixagent reads {SCHEMA_TAG!r}; "
                              "re-collect or use the mixagent version that wrote it")
    _check_columns(where, schema, tag)
    found_spec = meta.get(META_SPEC_HASH, b"").decode()
    if spec_hash is not None and found_spec != spec_hash:
        raise TrajectoryError(f"{where}: foreign shard: env-spec hash {found_spec}, expected "
                              f"{spec_hash} (collected on a different env spec or data)")
    found_cfg = meta.get(META_CONFIG_HASH, b"").decode()
    if config_hash is not None and found_cfg != config_hash:
        raise TrajectoryError(f"{where}: foreign shard: collection config hash {found_cfg}, "
                              f"expected {config_hash} (written by another collection)")
    try:
        return int(meta.get(META_EPISODE, b"-1"))
    except ValueError:
        raise TrajectoryError(f"{where}: unreadable episode index in the footer") from None


def _tag(schema: pa.Schema) -> str:
    return (schema.metadata or {}).get(META_SCHEMA, b"").decode(errors="replace")


def _check_columns(path: str | Path, schema: pa.Schema, tag: str = SCHEMA_TAG) -> None:
    want = arrow_schema()
    if tag != SCHEMA_TAG:  # an older readable schema: without the columns added since
        want = pa.schema([f for f in want if f.name not in V1_MISSING])
    have = {f.name: f.type for f in schema}
    missing = [f.name for f in want if f.name not in have]
    wrong = [f"{f.name} ({have[f.name]} instead of {f.type})" for f in want
             if f.name in have and have[f.name] != f.type]
    extra = [n for n in have if n not in want.names]
    if missing or wrong or extra:
        parts = ([f"missing columns {missing}"] if missing else []) + \
                ([f"wrong types {wrong}"] if wrong else []) + ([f"unknown columns {extra}"] if extra else [])
        raise TrajectoryError(f"{path}: columns do not match the schema {tag}: "
                              f"{'; '.join(parts)}")


def check_rows(path: str | Path, table: pa.Table, episode: int) -> None:
    """Structure of a whole episode: steps 0..T-1, K rows each, one continuation, terminal last."""
    if table.num_rows == 0:
        raise TrajectoryError(f"{path}: empty shard")
    eps = pc.unique(table["episode"]).to_pylist()
    if eps != [episode]:
        raise TrajectoryError(f"{path}: rows of episodes {eps[:5]}, expected only {episode}")
    t = table["t"].to_numpy()
    k = table["num_branches"].to_numpy()
    cont = table["is_continuation"].to_numpy(zero_copy_only=False)
    steps = sorted(set(t.tolist()))
    if steps != list(range(len(steps))):
        raise TrajectoryError(f"{path}: steps {steps} are not 0..{len(steps) - 1} (incomplete episode)")
    for s in steps:
        rows = t == s
        if rows.sum() != k[rows][0] or cont[rows].sum() != 1:
            raise TrajectoryError(f"{path}: step {s} has {int(rows.sum())} rows for "
                                  f"{int(k[rows][0])} branches and {int(cont[rows].sum())} "
                                  "continuations (expected K rows, one continuation)")
    last = t == steps[-1]
    term = table["terminateds"].to_numpy(zero_copy_only=False)
    if not term[last].all():
        raise TrajectoryError(f"{path}: the last step ({steps[-1]}) is not terminal (incomplete "
                              "episode)")


def scan_shards(root: Path, *, spec_hash: str | None, config_hash: str | None) -> ShardScan:
    """Validate every shard of a collection (full reads: shards are small)."""
    scan = ShardScan()
    folder = Path(root) / SHARDS_DIR
    if not folder.is_dir():
        return scan
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            scan.temporary.append(p)
            continue
        ep = episode_of(p)
        if ep is None:
            scan.bad.append(BadShard(p, "unexpected file in shards/ (not episode-NNNNNN.parquet)"))
            continue
        try:
            read_shard(p, spec_hash=spec_hash, config_hash=config_hash)
        except TrajectoryError as err:
            scan.bad.append(BadShard(p, str(err).removeprefix(f"{p}: ")))
        else:
            scan.good[ep] = p
    return scan


def quarantine(root: Path, bad: BadShard) -> Path:
    """Move a bad shard aside (never delete data); the reason is written beside it."""
    qdir = Path(root) / QUARANTINE_DIR
    qdir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    dest = qdir / f"{bad.path.name}.{stamp}"
    n = 1
    while dest.exists():
        dest = qdir / f"{bad.path.name}.{stamp}.{n}"
        n += 1
    os.replace(bad.path, dest)
    dest.with_name(dest.name + ".reason.txt").write_text(f"{bad.reason}\n", encoding="utf-8")
    return dest


def remove_temporary(paths: list[Path]) -> None:
    """Remove leftovers of interrupted shard writes (incomplete by construction)."""
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


# -- collection files ------------------------------------------------------------------------------
def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrajectoryError(f"{path}: {what} is missing") from None
    except (OSError, json.JSONDecodeError) as err:
        raise TrajectoryError(f"{path}: unreadable {what}: {err}") from None
    if not isinstance(data, dict):
        raise TrajectoryError(f"{path}: {what} is not a JSON object")
    return data


def read_collection(root: Path) -> dict[str, Any]:
    """``collection.json`` of a collection folder (identity and hashes), checked."""
    root = Path(root)
    if not root.is_dir():
        raise TrajectoryError(f"trajectory collection not found: {root}")
    data = read_json(root / COLLECTION_FILE, "the collection file (is this a mixagent trajectory "
                     "folder? collect one with 'mixagent collect')")
    if data.get("format") != COLLECTION_FORMAT:
        raise TrajectoryError(f"{root / COLLECTION_FILE}: format {data.get('format')!r}, expected "
                              f"{COLLECTION_FORMAT!r}")
    if data.get("schema") not in READABLE_TAGS:
        raise TrajectoryError(f"{root / COLLECTION_FILE}: schema {data.get('schema')!r}, this "
                              f"mixagent reads {SCHEMA_TAG!r}")
    return data


def write_collection(root: Path, collection: dict[str, Any], spec: dict[str, Any]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / SPEC_FILE, spec)
    write_json_atomic(root / COLLECTION_FILE, collection)


def read_card(root: Path) -> dict[str, Any]:
    path = Path(root) / CARD_FILE
    return read_json(path, "dataset card") if path.is_file() else {}


def write_card(root: Path, card: dict[str, Any], readme: str) -> None:
    write_json_atomic(Path(root) / CARD_FILE, card)
    with atomic_text_file(Path(root) / README_FILE) as f:
        f.write(readme)


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(p.name != LOCK_FILE for p in path.iterdir())


class CollectionBusyError(TrajectoryError):
    """Another collection run holds the folder's lock."""


@contextlib.contextmanager
def collection_lock(root: Path) -> Iterator[None]:
    """Hold ``root/.collect.lock`` for a whole collection run, or fail at once.

    Two runs on one folder would race to create it (the loser then calls it foreign) and, on
    ``--resume``, would both collect the same missing episodes; the lock makes the second one stop
    before it touches anything, naming the first. It is an ``flock``: the kernel releases it when
    its process dies, so a killed run never blocks the next one.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive_lock(root / LOCK_FILE):
            yield
    except LockHeld as err:
        host, _, pid = err.holder.partition(" ")
        who = f"pid {pid} on {host}" if pid else "pid unknown"
        raise CollectionBusyError(
            f"{root}: another collection run ({who}) is writing to this folder (it holds "
            f"{err.path}); wait for it to finish, or use another --out") from None
