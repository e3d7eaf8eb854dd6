"""Reading collections back: :func:`load` → :class:`TrajectorySet` (Arrow inside, pandas/numpy out).

Every shard is validated on read (schema tag, columns, env-spec and config hash, episode
structure). A bad shard is an error that names its path, unless ``skip_bad=True`` — then it is
skipped with a warning that names it. Trajectories of another env spec are refused unless
``allow_foreign=True``: mixing MDPs silently would corrupt any policy trained on them. Scenario-
family collections are the exception: their rows name their own scenario (``scenario``, and the
scenario's ``env_spec_hash``), so several families — e.g. one family collected plainly and again
with ``repeats`` — load side by side as one larger set of scenarios, and nothing is mixed silently.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mixagent.trajectories.schema import arrow_schema
from mixagent.trajectories.storage import (
    SHARDS_DIR,
    BadShard,
    TrajectoryError,
    episode_of,
    read_card,
    read_collection,
    read_shard,
)

log = logging.getLogger(__name__)


@dataclass
class TrajectorySet:
    """Transitions of one or more collections, sorted by (collection, episode, t, branch).

    ``table`` is the Arrow table (schema :func:`~mixagent.trajectories.schema.arrow_schema`);
    ``cards`` the dataset cards of the collections it came from; ``skipped`` the bad shards
    left out (only with ``skip_bad=True``).
    """

    table: pa.Table
    cards: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[BadShard] = field(default_factory=list)

    # -- interop -----------------------------------------------------------------------------------
    def to_arrow(self) -> pa.Table:
        return self.table

    def to_pandas(self) -> Any:
        """A pandas DataFrame (list columns become arrays/lists, maps lists of pairs)."""
        return self.table.to_pandas()

    @classmethod
    def from_arrow(cls, table: pa.Table, cards: list[dict[str, Any]] | None = None) -> TrajectorySet:
        """Wrap a table with the trajectory schema (e.g. one filtered in pandas and converted back)."""
        want = arrow_schema()
        try:
            table = table.select(want.names).cast(want)
        except (KeyError, pa.ArrowException) as err:
            raise TrajectoryError(f"table does not have the trajectory schema: {err}") from None
        return cls(table, list(cards or []))

    @classmethod
    def from_pandas(cls, frame: Any, cards: list[dict[str, Any]] | None = None) -> TrajectorySet:
        """Inverse of :meth:`to_pandas` (the frame needs every schema column)."""
        want = arrow_schema()
        missing = [n for n in want.names if n not in frame.columns]
        if missing:
            raise TrajectoryError(f"frame lacks trajectory columns {missing}")
        try:
            table = pa.Table.from_pandas(frame[want.names], schema=want, preserve_index=False)
        except (pa.ArrowException, ValueError, TypeError) as err:
            raise TrajectoryError(f"frame does not fit the trajectory schema: {err}") from None
        return cls(table, list(cards or []))

    # -- summary -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def num_transitions(self) -> int:
        return self.table.num_rows

    @property
    def episodes(self) -> list[str]:
        """Episode ids (``eps_id``) in order."""
        return pc.unique(self.table["eps_id"]).to_pylist()

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def domain_names(self) -> list[str]:
        return list(self.table["domain_names"][0].as_py()) if len(self) else \
            list(self.cards[0].get("domain_names", [])) if self.cards else []

    @property
    def env_spec_hashes(self) -> list[str]:
        return pc.unique(self.table["env_spec_hash"]).to_pylist()

    # -- selections --------------------------------------------------------------------------------
    def filter(self, mask: Any) -> TrajectorySet:
        """Rows where ``mask`` (bool array/Arrow expression result) is true."""
        return TrajectorySet(self.table.filter(mask), self.cards, self.skipped)

    def continuations(self) -> TrajectorySet:
        """Only each episode's continued path (what an unbranched run of the explorer saw)."""
        return self.filter(pc.equal(self.table["is_continuation"], True))

    def episode(self, eps_id: str) -> TrajectorySet:
        return self.filter(pc.equal(self.table["eps_id"], eps_id))

    # -- arrays for learning -----------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """Numpy arrays for offline RL: ``obs``/``new_obs`` [N, D] float32, ``actions`` [N, K]
        float32, ``weights`` [N, K], ``rewards`` [N], ``terminateds``/``truncateds`` [N] bool."""
        t = self.table

        def mat(col: str, dtype: Any) -> np.ndarray:
            if not len(self):
                return np.zeros((0, 0), dtype)
            return np.asarray(pc.list_flatten(t[col]).to_numpy(), dtype).reshape(len(self), -1)

        return {
            "obs": mat("obs", np.float32),
            "actions": mat("actions", np.float32),
            "weights": mat("weights", np.float64),
            "rewards": t["rewards"].to_numpy(),
            "new_obs": mat("new_obs", np.float32),
            "terminateds": t["terminateds"].to_numpy(zero_copy_only=False),
            "truncateds": t["truncateds"].to_numpy(zero_copy_only=False),
        }

    def observation_dicts(self, column: str = "obs") -> dict[str, np.ndarray]:
        """``obs``/``new_obs`` unflattened into the env's Dict layout: ``domains`` [N, K, F],
        ``global`` [N, G] (layout from the card)."""
        if not self.cards:
            raise TrajectoryError("no dataset card: the observation layout is unknown")
        if column not in ("obs", "new_obs"):
            raise ValueError(f"column must be 'obs' or 'new_obs', got {column!r}")
        layout = self.cards[0]["observation_layout"]
        flat = self.arrays()[column]
        k, f = layout["domains"]["shape"]
        return {"domains": flat[:, : k * f].reshape(-1, k, f), "global": flat[:, k * f :]}


def load(paths: str | Path | Sequence[str | Path], *, env_spec_hash: str | None = None,
         env_spec: Any = None, allow_foreign: bool = False, skip_bad: bool = False
         ) -> TrajectorySet:
    """Load one or more trajectory collections (folders written by ``mixagent collect``).

    Args:
        paths: collection folder(s).
        env_spec_hash / env_spec: refuse trajectories of any other env spec (``env_spec`` is a
            spec path or :class:`~mixagent.envs.spec.EnvSpec`, resolved to its hash — cheap).
        allow_foreign: accept collections whose env-spec hashes differ from each other or from
            the one asked for (a warning names them). Not needed for several scenario-family
            collections (each row names its scenario), unless a hash is asked for.
        skip_bad: skip shards that fail validation with a warning naming each, instead of
            raising :class:`~mixagent.trajectories.storage.TrajectoryError`.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise TrajectoryError("no trajectory folder given")
    if env_spec is not None and env_spec_hash is None:
        from mixagent.trajectories.identity import hash_of_spec_file

        env_spec_hash = hash_of_spec_file(env_spec)
    tables, cards, bad = [], [], []
    wanted = env_spec_hash
    roots = [Path(p) for p in paths]
    colls = [read_collection(root) for root in roots]
    families = env_spec_hash is None and all(c.get("scenario_family") for c in colls)
    for root, coll in zip(roots, colls, strict=True):
        spec_hash = coll["env_spec_hash"]
        if wanted is None:
            wanted = spec_hash
        if spec_hash != wanted and families:
            log.info("%s: scenario family %s (hash %s) loaded beside %s; its rows name their own "
                     "scenarios", root, coll.get("env_spec_name", "?"), spec_hash, wanted)
        elif spec_hash != wanted:
            msg = (f"{root}: trajectories of env spec hash {spec_hash}, expected {wanted} "
                   f"(a different scenario or data)")
            if not allow_foreign:
                raise TrajectoryError(msg + "; pass allow_foreign=True to mix them anyway")
            warnings.warn(msg + "; loading anyway (allow_foreign)", stacklevel=2)
        card = read_card(root) or {"collection_id": coll["collection_id"],
                                   "env_spec_hash": spec_hash,
                                   "domain_names": coll.get("domain_names", [])}
        cards.append(card)
        folder = root / SHARDS_DIR
        for p in sorted(folder.glob("*")) if folder.is_dir() else []:
            if p.name.startswith(".") and p.name.endswith(".tmp"):
                continue  # an unfinished write: not part of the collection
            if episode_of(p) is None:
                bad.append(BadShard(p, "unexpected file in shards/ (not episode-NNNNNN.parquet)"))
                continue
            try:
                tables.append(read_shard(p, spec_hash=spec_hash, config_hash=coll["config_hash"]))
            except TrajectoryError as err:
                bad.append(BadShard(p, str(err).removeprefix(f"{p}: ")))
    if bad:
        listing = "\n".join(f"  {b}" for b in bad)
        if not skip_bad:
            raise TrajectoryError(f"{len(bad)} bad trajectory shard(s):\n{listing}\n(pass "
                                  "skip_bad=True / --skip-bad to load the rest)")
        for b in bad:
            warnings.warn(f"skipping bad trajectory shard {b}", stacklevel=2)
            log.warning("skipping bad trajectory shard %s", b)
    if tables:
        table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
    else:
        table = arrow_schema().empty_table()
    return TrajectorySet(table, cards, bad)
