"""A simulated two-node Ray cluster loses a node mid-run (issue 14, item 4).

``ray.cluster_utils.Cluster`` starts a head raylet and a second "node" on this machine (1 CPU
each, so each of the two pool actors lands on its own node); once the first result of a
collection / evaluation is on disk, a thread removes the non-head node. The run must finish with
every episode exactly once, and its data equal, bit for bit, to an in-process one-worker run of
the same config — what the pool's retry of dead actors' items promises (mixagent/utils/raypool.py).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mixagent.evaluation.runner import evaluate
from mixagent.evaluation.worker import TIMING_FIELDS
from mixagent.trajectories import collect, load
from mixagent.trajectories.schema import DETERMINISTIC_COLUMNS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("micro_cache_env")]

OBJECT_STORE = 80 * 1024 * 1024
RUN_TIMEOUT = 120.0  # seconds a run may take before the test fails instead of hanging


@pytest.fixture(scope="module")
def cluster(micro_cache: Path, micro_spec: Path) -> Iterator[tuple[Any, Any]]:
    """(the cluster, its non-head node); always shut down. Started after the micro cache is
    built (``micro_spec``), with ``MIXAGENT_CACHE`` set, so raylets and actors inherit it."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # another module's local instance: this module needs the cluster
        ray.shutdown()
    saved = {k: os.environ.get(k) for k in ("MIXAGENT_CACHE", "RAY_ADDRESS")}
    os.environ["MIXAGENT_CACHE"] = str(micro_cache)
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    c = None
    try:
        try:
            c = Cluster(initialize_head=True, head_node_args={
                "num_cpus": 1, "object_store_memory": OBJECT_STORE, "include_dashboard": False})
            node = c.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
            c.wait_for_nodes()
        except Exception as err:  # pragma: no cover - depends on the machine
            pytest.skip(f"Ray cannot start a local multi-raylet cluster here: {err}")
        yield c, node
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if c is not None:
            c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _remove_when(cluster: Any, node: Any, ready: Callable[[], bool]) -> tuple[threading.Thread, dict]:
    """A thread that removes ``node`` as soon as ``ready()`` (polled), recording when."""
    state: dict[str, Any] = {"removed": None, "error": None, "stop": False}

    def watch() -> None:
        deadline = time.monotonic() + RUN_TIMEOUT
        try:
            while not state["stop"] and time.monotonic() < deadline:
                if ready():
                    cluster.remove_node(node)
                    state["removed"] = time.monotonic()
                    return
                time.sleep(0.02)
        except Exception as err:  # reported by the test
            state["error"] = err

    t = threading.Thread(target=watch, name="node-killer", daemon=True)
    t.start()
    return t, state


def _run_with_timeout(fn: Callable[[], Any]) -> Any:
    """``fn()`` in a thread, failing the test (not hanging it) after :data:`RUN_TIMEOUT`."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:
            box["error"] = err

    t = threading.Thread(target=target, name="cluster-run", daemon=True)
    t.start()
    t.join(RUN_TIMEOUT)
    if t.is_alive():
        pytest.fail(f"the run did not finish within {RUN_TIMEOUT:.0f} s after a node was lost (hang)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _rows(folder: Path) -> Any:
    df = load(folder).to_pandas()
    return df[list(DETERMINISTIC_COLUMNS)].sort_values(["episode", "t", "branch_id"]).reset_index(drop=True)


def test_collection_survives_node_loss(cluster: tuple[Any, Any], micro_spec: Path, tmp_path: Path):
    c, node = cluster
    episodes = 6
    cfg = {"env_spec": str(micro_spec), "episodes": episodes, "seed": 3, "progress": False}
    ref = tmp_path / "one-node"
    collect(out=str(ref), workers=1, **cfg)

    out = tmp_path / "cluster"
    shards = out / "shards"
    killer, state = _remove_when(c, node, lambda: any(shards.glob("episode-*.parquet")))
    try:
        r = _run_with_timeout(lambda: collect(out=str(out), workers=2, address=c.address,
                                              max_attempts=3, **cfg))
    finally:
        state["stop"] = True
        killer.join(10)
    assert state["error"] is None and state["removed"] is not None, "the node was never removed"
    assert r.retries >= 1, "the removed node's episode was not retried (it held none?)"
    assert sorted(r.collected) == list(range(episodes))  # each once: a duplicate would repeat
    got, want = _rows(out), _rows(ref)
    per_episode = got.groupby("episode").size()
    assert per_episode.index.tolist() == list(range(episodes)) and (per_episode == 3).all()
    assert len(got) == len(want)
    for col in DETERMINISTIC_COLUMNS:
        assert got[col].map(repr).tolist() == want[col].map(repr).tolist(), col


def _episodes(report: dict[str, Any]) -> list[dict[str, Any]]:
    def strip(rec: dict[str, Any]) -> dict[str, Any]:
        rec = {k: v for k, v in rec.items() if k not in TIMING_FIELDS}
        rec["steps"] = [{k: v for k, v in s.items() if k not in TIMING_FIELDS} for s in rec["steps"]]
        return rec

    return [strip(e) for e in report["episodes"]]


def test_evaluation_survives_node_loss(cluster: tuple[Any, Any], micro_spec: Path, tmp_path: Path):
    c, node = cluster
    if node not in c.list_all_nodes():  # the collection test removed it: add a fresh one
        node = c.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
        c.wait_for_nodes()
    seeds = [1000, 1001, 1002]
    # two phases (tuning episodes, then the tuned baseline on the eval seeds): the pool that lost
    # a worker in phase 1 must still serve phase 2
    cfg = {"envs": [str(micro_spec)], "policies": ["baseline:uniform", "baseline:best_fixed_ratio"],
           "seeds": seeds, "tune_seeds": [7, 8], "ratio_grid": [0.3, 0.7], "plots": False,
           "progress": False}
    ref = evaluate(out=str(tmp_path / "one-node"), workers=1, **cfg)

    out = tmp_path / "cluster"
    killer, state = _remove_when(c, node, lambda: any((out / "episodes").rglob("seed-*.json")))
    try:
        res = _run_with_timeout(lambda: evaluate(out=str(out), workers=2, address=c.address,
                                                 max_attempts=3, **cfg))
    finally:
        state["stop"] = True
        killer.join(10)
    assert state["error"] is None and state["removed"] is not None, "the node was never removed"
    assert res.episodes_run == ref.episodes_run == 2 * len(seeds) + 2 * 2  # + the tuning grid
    keys = [(e["policy_id"], e["seed"]) for e in res.report["episodes"]]
    assert len(keys) == len(set(keys)) == 2 * len(seeds)  # none lost, none twice
    assert _episodes(res.report) == _episodes(ref.report)
    assert res.report["win_rates"] == ref.report["win_rates"]
