"""Trajectory collection on the micro env spec: schema, card, branching, resume, faults, loader, CLI.

Heavy things happen once per session: the built-in ``tiny`` corpus and the micro base are built
into a session cache (``MIXAGENT_CACHE``), and Ray is started once. The micro spec is used with
``data.path`` pointing at the built corpus, which has the same env-spec hash as
``envs/micro.yaml`` (the hash covers the data's content, not its location) but skips the
built-in corpus's up-to-date scan in every process.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mixagent.errors import ConfigError
from mixagent.trajectories import collect, load
from mixagent.trajectories.collection import QUEUE_DEPTH
from mixagent.trajectories.schema import DETERMINISTIC_COLUMNS, SCHEMA_TAG, arrow_schema
from mixagent.trajectories.storage import TrajectoryError

pytestmark = pytest.mark.usefixtures("micro_cache_env")


@pytest.fixture(scope="session")
def ray_session():
    """Ray, started once for the session (reused if another fixture started it)."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    if started:
        ray.shutdown()


def _collect(spec: Path, out: Path, episodes: int, **kw):
    return collect(env_spec=str(spec), out=str(out), episodes=episodes, progress=False, **kw)


def _rows(folder: Path):
    df = load(folder).to_pandas()
    return df[list(DETERMINISTIC_COLUMNS)].sort_values(["episode", "t", "branch_id"]).reset_index(drop=True)


def _same_rows(a: Path, b: Path, episodes: list[int] | None = None) -> None:
    ra, rb = _rows(a), _rows(b)
    if episodes is not None:
        ra = ra[ra.episode.isin(episodes)].reset_index(drop=True)
        rb = rb[rb.episode.isin(episodes)].reset_index(drop=True)
    assert len(ra) == len(rb) and len(ra) > 0
    # eps_id embeds the collection id, identical for identical configs
    for col in DETERMINISTIC_COLUMNS:
        assert ra[col].map(repr).tolist() == rb[col].map(repr).tolist(), col


# -- collection, schema, card, loader --------------------------------------------------------------
def test_collect_in_process_schema_card_and_loader_round_trip(micro_spec: Path, tmp_path: Path):
    out = tmp_path / "plain"
    r = _collect(micro_spec, out, 3, seed=5)
    assert r.collected == [0, 1, 2] and r.transitions == 9 and r.skipped == []
    shards = sorted((out / "shards").glob("*.parquet"))
    assert [p.name for p in shards] == [f"episode-00000{i}.parquet" for i in range(3)]
    for p in shards:
        schema = pq.read_schema(p)
        assert schema.metadata[b"mixagent.schema"].decode() == SCHEMA_TAG
        assert schema.remove_metadata().equals(arrow_schema())
        assert pq.read_metadata(p).num_rows == 3
    card = __import__("json").loads((out / "card.json").read_text())
    assert card["counts"]["episodes"] == 3 and card["counts"]["transitions"] == 9
    assert card["schema"] == SCHEMA_TAG and card["env_spec"]["name"] == "micro"
    assert card["compute"]["runs"][0]["episodes_collected"] == 3
    assert card["compute"]["runs"][0]["compile"] == ["off"]  # runtime.compile, as applied
    assert "## Columns" in (out / "README.md").read_text()

    ts = load(out)
    assert len(ts) == 9 and ts.num_episodes == 3
    layout = card["observation_layout"]
    a = ts.arrays()
    k = len(ts.domain_names)
    assert a["obs"].shape == (9, layout["size"]) and a["actions"].shape == (9, k)
    assert np.allclose(a["weights"].sum(1), 1.0)
    assert np.all(np.abs(a["actions"]) <= 1.0)
    d = ts.observation_dicts("new_obs")
    assert d["domains"].shape == (9, k, 5) and d["global"].shape == (9, 4)
    # the applied weights are the new observation's weight feature
    assert np.allclose(d["domains"][:, :, 0], a["weights"], atol=1e-6)
    # obs[t+1] == new_obs[t] along an episode; terminal exactly at the last step
    df = ts.to_pandas()
    for _, ep in df.groupby("episode"):
        ep = ep.sort_values("t")
        assert ep.t.tolist() == [0, 1, 2] and ep.terminateds.tolist() == [False, False, True]
        for x, y in zip(ep.new_obs.tolist()[:-1], ep.obs.tolist()[1:], strict=True):
            assert np.array_equal(x, y)
        assert np.isclose(ep.rewards.sum(), ep.balanced_score.iloc[-1])
    # pandas round trip
    back = type(ts).from_pandas(df, ts.cards)
    assert back.table.equals(ts.table)


def test_collect_logs_a_line_per_episode_off_a_terminal(micro_spec: Path, tmp_path: Path, caplog):
    """Piped to a log (``progress=None``, stderr not a terminal), a collection that runs for hours
    must say something per episode, not stay silent until the end."""
    import logging

    with caplog.at_level(logging.INFO, logger="mixagent.trajectories.collection"):
        collect(env_spec=str(micro_spec), out=str(tmp_path / "c"), episodes=2, seed=1, progress=None)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("collecting")]
    assert any("1/2 episodes" in m and "episode 0: 3 transitions" in m for m in lines), lines
    assert any(m.startswith("collecting: done, 2/2 episodes") for m in lines), lines


def test_branching_records_k_transitions_per_step(micro_spec: Path, tmp_path: Path):
    out = tmp_path / "branch"
    r = _collect(micro_spec, out, 2, seed=1, branch={"k": 3, "select": "best"})
    assert r.transitions == 2 * 3 * 3
    df = load(out).to_pandas()
    assert df.batched.all()  # the folded fast path was verified and used
    for _, ep in df.groupby("episode"):
        parent = -1
        for _t, step in ep.groupby("t"):
            assert sorted(step.branch_id) == [0, 1, 2] and (step.num_branches == 3).all()
            assert step.is_continuation.sum() == 1 and (step.parent_branch == parent).all()
            assert all(np.array_equal(o, step.obs.iloc[0]) for o in step.obs)  # one snapshot
            chosen = step[step.is_continuation].iloc[0]
            assert chosen.rewards == step.rewards.max()  # select=best
            parent = int(chosen.branch_id)
    cont = load(out).continuations().to_pandas()
    assert len(cont) == 6 and cont.groupby("episode").t.apply(list).tolist() == [[0, 1, 2]] * 2


def test_batched_branches_match_sequential_env_steps(micro_env):
    from mixagent.trajectories.branching import BranchConfig, Brancher

    env = micro_env
    rng = np.random.default_rng(0)
    actions = [rng.uniform(-1, 1, env.num_domains).astype(np.float32) for _ in range(4)]
    results = {}
    for mode in ("off", "auto"):
        env.reset(seed=3)
        env.step(np.zeros(env.num_domains, np.float32))
        br = Brancher(env, BranchConfig(k=4, batched=mode))
        trs, chosen = br.step(actions, 2)
        assert chosen == 2 and br.fallback_reason is None
        after = env.step(actions[1])  # continue from branch 2's end state
        results[mode] = (trs, after)
    (seq, seq_after), (bat, bat_after) = results["off"], results["auto"]
    assert all(t.batched for t in bat) and not any(t.batched for t in seq)
    for s, b in zip(seq, bat, strict=True):
        assert np.allclose(s.info["losses"], b.info["losses"], rtol=1e-5)
        assert abs(s.reward - b.reward) < 1e-6
        for key in s.obs:
            assert np.allclose(s.obs[key], b.obs[key], atol=1e-5)
        assert s.info["task_metrics"].keys() == b.info["task_metrics"].keys()
        for task, metrics in s.info["task_metrics"].items():
            for m, v in metrics.items():
                assert abs(v - b.info["task_metrics"][task][m]) < 1e-5, (task, m)
    assert abs(seq_after[1] - bat_after[1]) < 1e-6
    assert np.allclose(seq_after[4]["losses"], bat_after[4]["losses"], rtol=1e-5)
    assert bool(env.engine.evaluator.tasks) == (len(seq[0].info["task_metrics"]) > 0)


def test_fold_refuses_dropout_and_checks_itself():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mixagent.trajectories.replicas import FoldError, ReplicaModel

    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, attention_dropout=0.1)
    with pytest.raises(FoldError, match="dropout"):
        ReplicaModel(LlamaForCausalLM(cfg), 2)
    cfg.attention_dropout = 0.0
    model = LlamaForCausalLM(cfg).eval()
    rm = ReplicaModel(model, 3)
    with torch.no_grad():
        for i, p in enumerate(rm.by_name.values()):
            p.add_(0.01 * (i + 1) * torch.arange(3, dtype=p.dtype).view(3, *([1] * (p.dim() - 1))))
        ids = torch.randint(0, 50, (2, 7))
        logits = rm(ids.repeat(3, 1)).view(3, 2, 7, -1)
        for k in range(3):
            state = {n: rm.replica_tensor(n, k) for n in rm.by_name}
            ref = torch.func.functional_call(model, state, (ids,)).logits
            assert torch.allclose(logits[k], ref, atol=1e-5)


# -- resume, corrupt and foreign shards ----------------------------------------------------------
def test_resume_after_simulated_kill_reproduces_uninterrupted_run(micro_spec: Path, tmp_path: Path):
    full, part = tmp_path / "full", tmp_path / "part"
    cfg = {"seed": 7, "branch": {"k": 2}}
    _collect(micro_spec, full, 4, **cfg)
    _collect(micro_spec, part, 2, **cfg)  # "killed" after two episodes
    shards = part / "shards"
    (shards / ".episode-000002.parquet.x1y2.tmp").write_bytes(b"PAR1 half a write")
    victim = shards / "episode-000001.parquet"
    victim.write_bytes(victim.read_bytes()[:200])  # truncated shard
    with pytest.raises(TrajectoryError, match="already holds this collection"):
        _collect(micro_spec, part, 4, **cfg)  # without --resume
    r = _collect(micro_spec, part, 4, resume=True, **cfg)
    assert r.skipped == [0] and r.collected == [1, 2, 3]
    assert [p for p, _ in r.quarantined] == [victim]
    assert not list(shards.glob(".*.tmp"))
    moved = list((part / "quarantine").glob("episode-000001.parquet.*"))
    assert len(moved) == 2 and any(p.name.endswith(".reason.txt") for p in moved)
    _same_rows(full, part)
    card = __import__("json").loads((part / "card.json").read_text())
    assert card["counts"]["episodes"] == 4 and len(card["compute"]["runs"]) == 2


def _collector_with_shards(spec: Path, out: Path, cache: Path, *args: str,
                           stderr: int) -> subprocess.Popen:
    """A `mixagent collect` of 400 episodes in a subprocess, once it has written two shards
    (killed, with the assertion's message, if it ends or stalls before)."""
    env = {**os.environ, "MIXAGENT_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "mixagent.cli.main", "collect", str(spec), "--out", str(out),
           "--episodes", "400", "--seed", "3", "--no-progress", *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
    deadline = time.time() + 180
    while len(list((out / "shards").glob("episode-*.parquet"))) < 2:
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError("collector ended or stalled before two shards")
        time.sleep(0.05)
    return proc


def test_resume_after_real_sigkill(micro_spec: Path, tmp_path: Path, micro_cache: Path):
    full, part = tmp_path / "full", tmp_path / "killed"
    _collect(micro_spec, full, 5, seed=3)
    proc = _collector_with_shards(micro_spec, part, micro_cache, stderr=subprocess.DEVNULL)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((part / "shards").glob("episode-*.parquet")))
    assert 2 <= done < 400
    r = _collect(micro_spec, part, 5, seed=3, resume=True)
    assert sorted(r.skipped + r.collected) == list(range(5))
    _same_rows(full, part, episodes=list(range(5)))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_stops_like_ctrl_c_and_keeps_the_card(micro_spec: Path, tmp_path: Path,
                                                     micro_cache: Path, workers: str):
    """`kill PID` (SIGTERM) must not lose the card or the compute record, in process or with
    Ray in the driver (which installs SIGTERM handlers of its own)."""
    out = tmp_path / "termed"
    proc = _collector_with_shards(micro_spec, out, micro_cache, "--workers", workers,
                                  stderr=subprocess.PIPE)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, "a collection stopped early must not look like a finished one"
    done = len(list((out / "shards").glob("episode-*.parquet")))
    card = __import__("json").loads((out / "card.json").read_text())
    assert "SIGTERM received" in err and (out / "README.md").is_file()
    assert card["counts"]["episodes"] == done and 2 <= done < 400
    (run,) = card["compute"]["runs"]
    assert run["episodes_collected"] == done and run["episodes_requested"] == 400


def test_a_second_sigterm_lets_the_card_finish(micro_spec: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture):
    """A SIGTERM that arrives while the card is written (the second `kill` of an impatient
    user or scheduler) is logged, and the card is still written; afterwards SIGTERM means
    what it meant before."""
    import mixagent.trajectories.collection as collection

    real = collection.build_card

    def build_card_under_fire(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(collection, "build_card", build_card_under_fire)
    before = signal.getsignal(signal.SIGTERM)
    r = _collect(micro_spec, tmp_path / "c", 1, seed=0)
    assert r.collected == [0] and (tmp_path / "c" / "card.json").is_file()
    assert "SIGTERM received while writing the dataset card" in caplog.text
    assert signal.getsignal(signal.SIGTERM) == before


def test_loader_reports_corrupt_foreign_and_versioned_shards(micro_spec: Path, tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    _collect(micro_spec, a, 3, seed=0)
    _collect(micro_spec, b, 1, seed=99)
    bad = a / "shards" / "episode-000001.parquet"
    good = bad.read_bytes()
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(TrajectoryError) as err:
        load(a)
    assert str(bad) in str(err.value) and "truncated or corrupt" in str(err.value)
    with pytest.warns(UserWarning, match="episode-000001"):
        ts = load(a, skip_bad=True)
    assert ts.num_episodes == 2 and [s.path for s in ts.skipped] == [bad]
    # a shard of another collection (different seed) dropped into this one
    bad.write_bytes(good)
    shutil.copy(b / "shards" / "episode-000000.parquet", a / "shards" / "episode-000002.parquet")
    with pytest.raises(TrajectoryError, match="foreign shard"):
        load(a)
    # a shard with another schema version
    t = pq.read_table(b / "shards" / "episode-000000.parquet")
    meta = dict(t.schema.metadata)
    meta[b"mixagent.schema"] = b"mixagent.trajectories/0"
    pq.write_table(t.replace_schema_metadata(meta), a / "shards" / "episode-000002.parquet")
    with pytest.raises(TrajectoryError, match=r"schema 'mixagent\.trajectories/0'"):
        load(a)
    # not parquet at all
    (a / "shards" / "episode-000002.parquet").write_text("hello")
    with pytest.raises(TrajectoryError, match=r"episode-000002\.parquet: not a readable Parquet"):
        load(a)
    (a / "shards" / "episode-000002.parquet").unlink()
    # trajectories of a different env spec are refused unless asked for
    with pytest.raises(TrajectoryError, match="env spec hash"):
        load(a, env_spec_hash="0" * 24)
    with pytest.warns(UserWarning, match="allow_foreign"):
        assert load(a, env_spec_hash="0" * 24, allow_foreign=True).num_episodes == 2
    assert load([a, b]).num_episodes == 3  # same env spec: fine to combine


def test_collect_refuses_foreign_or_unrelated_folders(micro_spec: Path, tmp_path: Path):
    out = tmp_path / "c"
    _collect(micro_spec, out, 1, seed=0)
    with pytest.raises(TrajectoryError, match="seed: 0 there, 1 now"):
        _collect(micro_spec, out, 2, seed=1, resume=True)
    with pytest.raises(TrajectoryError, match="branch"):
        _collect(micro_spec, out, 2, seed=0, resume=True, branch={"k": 2})
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(TrajectoryError, match="not a mixagent trajectory collection"):
        _collect(micro_spec, other, 1)
    with pytest.raises(ConfigError, match="unknown explorer"):
        _collect(micro_spec, tmp_path / "x", 1, explorers=["nope"])


def test_second_collect_on_a_busy_folder_refuses_and_a_dead_holder_does_not_block(
        micro_spec: Path, tmp_path: Path):
    from mixagent.trajectories.storage import LOCK_FILE, CollectionBusyError, collection_lock

    out = tmp_path / "busy"
    # a run in this process holds the folder (flock conflicts across open files, even in-process)
    with collection_lock(out):
        with pytest.raises(CollectionBusyError, match=rf"another collection run \(pid {os.getpid()}"):
            _collect(micro_spec, out, 1)
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]  # the refused run wrote nothing
    assert not out.exists() or not any(out.iterdir())  # released: the lock file is gone
    _collect(micro_spec, out, 1, seed=2)
    assert not (out / LOCK_FILE).exists()

    # another process holds it (two --resume runs): refused, naming that process; once it is
    # SIGKILLed its lock file stays behind but no longer blocks
    code = ("import sys, time; from pathlib import Path; "
            "from mixagent.trajectories.storage import collection_lock\n"
            "with collection_lock(Path(sys.argv[1])):\n"
            "    print('locked', flush=True); time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(CollectionBusyError, match=rf"\(pid {proc.pid} on .*wait for it.*--out"):
            _collect(micro_spec, out, 2, seed=2, resume=True)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (out / LOCK_FILE).exists()
    r = _collect(micro_spec, out, 2, seed=2, resume=True)
    assert r.skipped == [0] and r.collected == [1]
    assert not (out / LOCK_FILE).exists()


# -- Ray -------------------------------------------------------------------------------------------
def test_ray_two_workers_retry_a_dead_worker_and_match_in_process(
        micro_spec: Path, tmp_path: Path, ray_session):
    cfg = {"seed": 11, "branch": {"k": 2}, "explorers": ["random_walk@0.5", "uniform@0.5"]}
    local = tmp_path / "local"
    _collect(micro_spec, local, 4, **cfg)
    out = tmp_path / "ray"
    marker = tmp_path / "crashed"
    r = _collect(micro_spec, out, 4, workers=2, fault={"episode": 1, "marker": str(marker)},
                 **cfg)
    assert marker.exists()  # a worker really died on episode 1 ...
    assert r.retries == 1 and sorted(r.collected) == [0, 1, 2, 3]  # ... and it was retried
    # its queue held episodes 1 and 3 (two items per actor): both are sent again, but only
    # the one it was running counts as a try
    assert r.remote_calls == 4 + QUEUE_DEPTH and not r.in_process
    assert r.cpu_seconds_per_transition > 0
    ts = load(out)
    assert len(ts) == 4 * 3 * 2 and ts.num_episodes == 4
    workers = set(ts.table["worker"].to_pylist())
    assert workers and not any(w.startswith("local") for w in workers)
    _same_rows(local, out)  # same seeds -> same rows, whichever worker ran an episode
    explorers = __import__("json").loads((out / "card.json").read_text())["explorers"]
    assert sum(explorers.values()) == 4


def test_shard_tables_cross_processes_as_arrow_ipc_unchanged(micro_spec: Path, tmp_path: Path):
    from mixagent.trajectories.schema import table_from_ipc, table_to_ipc

    _collect(micro_spec, tmp_path / "c", 1, seed=5)
    table = pq.read_table(next((tmp_path / "c" / "shards").glob("episode-*.parquet")))
    back = table_from_ipc(table_to_ipc(table))
    assert back.equals(table) and back.schema.metadata == table.schema.metadata


# -- explorers ---------------------------------------------------------------------------------------
def test_random_walk_is_centred_on_the_previous_weights():
    from mixagent.trajectories.explorers import RandomWalkExplorer, make_explorer

    rw = make_explorer("random_walk:concentration=200,jump=0")
    assert isinstance(rw, RandomWalkExplorer)
    rw.reset(["a", "b", "c"], np.array([False, True, True]), seed=0)
    first = rw.act({}, {"weights": np.zeros(3)})
    assert np.allclose(first, 1 / 3)  # start=uniform
    prev = np.array([0.7, 0.2, 0.1])
    draws = np.array([rw.act({}, {"weights": prev}) for _ in range(400)])
    assert np.allclose(draws.sum(1), 1.0) and (draws >= 0).all()
    assert np.allclose(draws.mean(0), prev, atol=0.02)
    jumpy = make_explorer("random_walk:concentration=200,jump=1")
    jumpy.reset(["a", "b", "c"], np.array([False, True, True]), seed=0)
    far = np.array([jumpy.act({}, {"weights": prev}) for _ in range(400)])
    assert np.allclose(far.mean(0), 1 / 3, atol=0.05)  # jumps land anywhere on the simplex


def test_explorer_specs_and_shares():
    from mixagent.trajectories.explorers import choose_explorer, make_explorer, parse_explorers

    choices = parse_explorers(["random_walk:jump=0.2@3", "uniform:alpha=0.5@1"])
    assert [c.weight for c in choices] == [3.0, 1.0]
    picks = [choose_explorer(choices, np.random.default_rng(i)) for i in range(400)]
    assert 0.65 < picks.count(choices[0].spec) / 400 < 0.85
    with pytest.raises(ConfigError, match="unknown option"):
        make_explorer("random_walk:speed=3")
    with pytest.raises(ConfigError, match="positive"):
        parse_explorers(["uniform@0"])
    # policy explorers come from the policies layer's factory, never from an import side effect
    with pytest.raises(ConfigError, match=r"mixagent\.policies\.policy_explorers\.make_explorer"):
        make_explorer("baseline:uniform")
    from mixagent.policies.policy_explorers import make_explorer as policy_factory

    with pytest.raises(ConfigError):
        policy_factory("policy:/definitely/not/a/policy")
    with pytest.raises(ConfigError, match="unknown option"):
        parse_explorers(["random_walk:speed=3"], policy_factory)  # other specs: trajectories' own


def test_policy_explorer_factory_reaches_workers_and_needs_the_real_space():
    """The factory is a module-level function (pickled by reference, as Ray sends it); the
    explorers it builds are reset with the env's DomainSpace, never one guessed from names."""
    import pickle

    from mixagent.data.space import DomainSpace
    from mixagent.policies.policy_explorers import PolicyExplorer, make_explorer
    from mixagent.trajectories.explorers import RandomWalkExplorer

    factory = pickle.loads(pickle.dumps(make_explorer))
    assert factory is make_explorer
    assert isinstance(factory("random_walk"), RandomWalkExplorer)
    ex = factory("baseline:tokens")
    assert isinstance(ex, PolicyExplorer) and ex.stateless
    space = DomainSpace.synthetic(4, 2)
    with pytest.raises(ConfigError, match="domain space"):
        ex.reset(space.names, space.is_target, seed=0)
    ex.reset(space.names, space.is_target, seed=0, space=space)
    tok = np.asarray(space.train_tokens, dtype=np.float64)
    assert np.allclose(ex.act({"domains": np.zeros((4, 5)), "global": np.zeros(4)}, {}), tok / tok.sum())


def test_policy_explorer_rows_map_actions_to_the_applied_weights(micro_spec: Path, tmp_path: Path):
    """One path from an explorer's weights to a stored row: the worker stores the centred action
    whose env-mapped weights are the proposal, and the env applies exactly that map."""
    from mixagent.envs.actions import weights_from_action
    from mixagent.envs.spec import load_env_spec
    from mixagent.policies.policy_explorers import make_explorer

    out = tmp_path / "fixed"
    _collect(micro_spec, out, 1, explorers=["baseline:fixed_ratio?source=0.2"],
             explorer_factory=make_explorer)
    act = load_env_spec(micro_spec).action
    df = load(out).to_pandas()
    for actions, weights, proposed in zip(df.actions, df.weights, df.proposed_weights, strict=True):
        np.testing.assert_allclose(weights_from_action(actions, act.scale, act.floor), weights, atol=1e-6)
        np.testing.assert_allclose(weights, proposed, atol=1e-6)  # 0.2 : 0.8 is reachable


# -- the structured-mixture explorer ------------------------------------------------------------
_MIX_NAMES = [f"d{i}" for i in range(19)]
_MIX_TGT = np.array([False] * 10 + [True] * 9)


def _mixture_episode(spec: str, seed: int, num_steps: int = 6, tgt: np.ndarray = _MIX_TGT):
    from mixagent.trajectories.explorers import make_explorer

    ex = make_explorer(spec)
    ex.reset([f"d{i}" for i in range(tgt.size)], tgt, seed, num_steps=num_steps)
    return ex, np.array([ex.act({}, {"step": t}) for t in range(num_steps)])


def test_mixture_explorer_is_deterministic_per_seed_and_on_the_simplex():
    from mixagent.trajectories.explorers import MixtureExplorer, make_explorer

    ex = make_explorer("mixture")
    assert isinstance(ex, MixtureExplorer) and ex.stateless and not ex.stochastic
    assert ex.name == "mixture:source=0.2-0.9,subset=0.5,concentration=1,schedule=any,steps=env"
    assert make_explorer(ex.name).name == ex.name  # the name is a canonical spec
    shapes = set()
    for seed in range(40):
        a, wa = _mixture_episode("mixture", seed)
        _, wb = _mixture_episode("mixture", seed)
        np.testing.assert_array_equal(wa, wb)
        assert (wa >= 0).all() and np.allclose(wa.sum(1), 1.0)
        shares = wa[:, ~_MIX_TGT].sum(1)
        assert ((shares >= 0.2 - 1e-12) & (shares <= 0.9 + 1e-12)).all()
        shapes.add(a.shape)
    assert shapes == {"static", "two_phase", "ramp"}  # any: every shape turns up
    _, other = _mixture_episode("mixture", 1)
    assert not np.array_equal(_mixture_episode("mixture", 0)[1], other)


def test_mixture_explorer_keeps_random_non_empty_subsets_per_field():
    sparse = 0
    for seed in range(30):
        _, w = _mixture_episode("mixture:subset=0.2,schedule=static", seed)
        first = w[0]
        assert (first[~_MIX_TGT] > 0).any() and (first[_MIX_TGT] > 0).any()  # never empty
        sparse += int((first == 0).any())
        zero = first == 0
        assert (w[:, zero] == 0).all()  # the subset is the episode's, at every step
    assert sparse == 30  # with subset=0.2 some of 19 domains are always out
    _, full = _mixture_episode("mixture:subset=1,schedule=static", 3)
    assert (full > 0).all()
    # within-field weights are Dirichlet over the kept domains, normalised per field
    _, w = _mixture_episode("mixture:source=0.6,subset=0.5,schedule=static", 7)
    assert np.isclose(w[0][~_MIX_TGT].sum(), 0.6) and np.isclose(w[0][_MIX_TGT].sum(), 0.4)
    # a space with a single field puts everything on it
    for tgt in (np.zeros(5, bool), np.ones(5, bool)):
        _, only = _mixture_episode("mixture:schedule=ramp", 0, tgt=tgt)
        assert np.allclose(only.sum(1), 1.0) and (only >= 0).all()


def test_mixture_explorer_schedules_use_the_headroom_formula():
    from mixagent.envs.shares import source_share
    from mixagent.evaluation.schedules import source_share as evaluation_share

    assert evaluation_share is source_share  # one formula for headroom and collection
    for steps in (3, 4, 7):
        ex, w = _mixture_episode("mixture:source=0.1-0.9,schedule=static", 2, steps)
        assert ex.shape == "static" and np.allclose(w, w[0])  # constant over steps
        ex, w = _mixture_episode("mixture:source=0.1-0.9,schedule=two_phase", 2, steps)
        shares = w[:, ~_MIX_TGT].sum(1)
        expected = [source_share("two_phase", ex.start, ex.end, t, steps) for t in range(steps)]
        np.testing.assert_allclose(shares, expected, atol=1e-12)
        half = {3: 1, 4: 2, 7: 3}[steps]  # the first step of the second half
        assert not np.isclose(ex.start, ex.end)
        assert np.allclose(shares[:half], ex.start) and np.allclose(shares[half:], ex.end)
        ex, w = _mixture_episode("mixture:source=0.1-0.9,schedule=ramp", 2, steps)
        shares = w[:, ~_MIX_TGT].sum(1)
        assert np.isclose(shares[0], ex.start) and np.isclose(shares[-1], ex.end)
        np.testing.assert_allclose(shares, [source_share("ramp", ex.start, ex.end, t, steps)
                                            for t in range(steps)], atol=1e-12)
        # within-field proportions stay fixed while the share moves
        within = w[:, ~_MIX_TGT] / shares[:, None]
        assert np.allclose(within, within[0])
    # the step index is the env's info["step"] (branching may call act again at one step)
    ex, _ = _mixture_episode("mixture:schedule=ramp", 5, 4)
    assert np.array_equal(ex.act({}, {"step": 0}), ex.act({}, {"step": 0}))
    # steps=N overrides the length given at reset; without either, only static works
    ex, _ = _mixture_episode("mixture:schedule=two_phase,steps=2", 1, num_steps=10)
    assert ex.num_steps == 2 and np.isclose(ex.act({}, {"step": 1})[~_MIX_TGT].sum(), ex.end)
    from mixagent.trajectories.explorers import make_explorer

    with pytest.raises(ConfigError, match="steps=N"):
        make_explorer("mixture:schedule=ramp").reset(_MIX_NAMES, _MIX_TGT, 0)
    make_explorer("mixture:schedule=static").reset(_MIX_NAMES, _MIX_TGT, 0)


@pytest.mark.parametrize("spec, match", [
    ("mixture:source=0.9-0.2", "LO > HI"),
    ("mixture:source=0.2-1.5", r"in \[0, 1\]"),
    ("mixture:source=lots", "not a share range"),
    ("mixture:subset=0", r"\(0, 1\]"),
    ("mixture:subset=1.5", r"\(0, 1\]"),
    ("mixture:concentration=0", "positive"),
    ("mixture:schedule=wave", "static, two_phase, ramp, any"),
    ("mixture:steps=0", "positive integer"),
    ("mixture:speed=3", "unknown option"),
])
def test_mixture_explorer_bad_options_say_what_to_fix(spec: str, match: str):
    from mixagent.trajectories.explorers import make_explorer

    with pytest.raises(ConfigError, match=match):
        make_explorer(spec)


def test_mixture_explorer_collects_its_plan(micro_spec: Path, tmp_path: Path):
    """One in-process episode: the rows' proposals are the plan drawn from the episode's explorer
    seed with the env's own length, and the applied weights are the env's map of the actions."""
    from mixagent.envs.actions import action_from_weights, weights_from_action
    from mixagent.envs.setup import resolve_spec
    from mixagent.envs.spec import load_env_spec
    from mixagent.trajectories.explorers import make_explorer
    from mixagent.trajectories.worker import episode_seeds

    spec = "mixture:source=0.5-0.7,subset=0.5,schedule=two_phase"
    out = tmp_path / "mixture"
    _collect(micro_spec, out, 1, seed=4, explorers=[spec])
    env_spec = load_env_spec(micro_spec)
    df = load(out).to_pandas().sort_values("t")
    ex = make_explorer(spec)
    assert set(df.explorer) == {ex.name}
    proposed = np.array(df.proposed_weights.tolist())
    k = proposed.shape[1]
    assert len(df) == env_spec.cpt.num_steps
    resolved = resolve_spec(micro_spec)
    assert len(resolved.domains) == k
    ex.reset(list(resolved.domains), resolved.is_target, episode_seeds(4, 0).explorer,
             num_steps=env_spec.cpt.num_steps)
    plan = np.array([ex.act({}, {"step": int(t)}) for t in df.t])
    np.testing.assert_allclose(proposed, plan, atol=1e-12)
    act = env_spec.action
    for actions, weights, prop in zip(df.actions, df.weights, proposed, strict=True):
        np.testing.assert_allclose(weights_from_action(actions, act.scale, act.floor), weights, atol=1e-6)
        np.testing.assert_allclose(
            weights, weights_from_action(action_from_weights(prop, act.scale, act.floor),
                                         act.scale, act.floor), atol=1e-6)
    # branching: the plan is stateless (the step comes from info), its alternatives perturb it,
    # and the episode may continue from the best branch
    branched = tmp_path / "mixture-branched"
    _collect(micro_spec, branched, 1, seed=4, explorers=[spec], branch={"k": 2, "select": "best"})
    bf = load(branched).to_pandas()
    first = bf[bf.branch_id == 0].sort_values("t")
    np.testing.assert_allclose(np.array(first.proposed_weights.tolist()), plan, atol=1e-12)
    alt = np.array(bf[bf.branch_id == 1].sort_values("t").proposed_weights.tolist())
    assert not np.allclose(alt, plan)


def test_episode_seeds_depend_only_on_collection_seed_and_index():
    from mixagent.trajectories.worker import episode_seeds

    assert episode_seeds(0, 5) == episode_seeds(0, 5)
    assert episode_seeds(0, 5) != episode_seeds(0, 6) != episode_seeds(1, 5)


# -- CLI ---------------------------------------------------------------------------------------------
def test_cli_collect_info_plot(micro_spec: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from mixagent.cli.main import app

    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(app, ["collect", str(micro_spec), "--out", str(out), "--episodes", "2",
                              "--branch", "2", "--branch-select", "random", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "collected 2 episode(s), 12 transitions" in " ".join(res.output.split())
    res = runner.invoke(app, ["trajectories", "info", str(out)])
    assert res.exit_code == 0, res.output
    assert "12 (6 on continued paths, 6 branch alternatives)" in res.output
    png = tmp_path / "p.png"
    res = runner.invoke(app, ["trajectories", "plot", str(out), "--out", str(png)])
    assert res.exit_code == 0, res.output
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
