"""Minari export (``mixagent trajectories export --format minari``): round trip, CLI, bad input.

The round trip reads the shards with pyarrow directly (not through the loader the export uses),
loads the export with ``minari.load_dataset`` from its own datasets root, and compares every
transition. Collections are tiny micro-spec runs, made once per module.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import run_main  # the console script in this process

from mixagent.trajectories import collect

minari = pytest.importorskip("minari", reason="the optional 'minari' extra: pip install -e '.[minari]'")

pytestmark = pytest.mark.usefixtures("micro_cache_env")

FAMILY_MICRO = Path(__file__).resolve().parents[1] / "envs" / "family-micro.yaml"


@pytest.fixture(scope="module")
def plain(micro_spec: Path, micro_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "micro-plain"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXAGENT_CACHE", str(micro_cache))
        collect(env_spec=str(micro_spec), out=str(out), episodes=3, seed=4, progress=False)
    return out


@pytest.fixture(scope="module")
def branched(micro_spec: Path, micro_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "micro-branch"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXAGENT_CACHE", str(micro_cache))
        collect(env_spec=str(micro_spec), out=str(out), episodes=2, seed=1, progress=False,
                branch={"k": 2, "select": "best"})
    return out


def _shard_rows(folder: Path) -> pa.Table:
    """Every row of every shard, read with pyarrow alone, sorted by (episode, t, branch)."""
    tables = [pq.read_table(p).replace_schema_metadata(None)
              for p in sorted((folder / "shards").glob("episode-*.parquet"))]
    return pa.concat_tables(tables).sort_by([("episode", "ascending"), ("t", "ascending"),
                                             ("branch_id", "ascending")])


def _load(root: Path, dataset_id: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return minari.load_dataset(dataset_id)


def _check_every_transition(folder: Path, ds: Any, *, continued_only: bool) -> None:
    rows = _shard_rows(folder)
    if continued_only:
        rows = rows.filter(rows["is_continuation"])
    episodes = sorted(set(rows["episode"].to_pylist()))
    assert ds.total_episodes == len(episodes)
    assert ds.total_steps == rows.num_rows
    meta = list(ds.storage.get_episode_metadata(range(len(episodes))))
    seen = []
    for i, ep in zip(range(len(episodes)), ds.iterate_episodes(), strict=True):
        assert ep.id == i
        want = rows.filter(pa.compute.equal(rows["episode"], episodes[i])).to_pylist()
        assert [r["t"] for r in want] == list(range(len(want)))
        assert len(ep) == len(want) and ep.observations.shape[0] == len(want) + 1
        for t, r in enumerate(want):
            assert ep.observations.dtype == np.float32 and ep.actions.dtype == np.float32
            assert np.array_equal(ep.observations[t], np.asarray(r["obs"], np.float32))
            assert np.array_equal(ep.observations[t + 1], np.asarray(r["new_obs"], np.float32))
            assert np.array_equal(ep.actions[t], np.asarray(r["actions"], np.float32))
            assert ep.rewards[t] == r["rewards"]  # float64 kept: bit-for-bit
            assert bool(ep.terminations[t]) == r["terminateds"]
            assert bool(ep.truncations[t]) == r["truncateds"]
        assert meta[i]["eps_id"] == want[0]["eps_id"] and meta[i]["mixagent_episode"] == episodes[i]
        assert meta[i]["seed"] == want[0]["env_seed"]
        seen.append(meta[i]["eps_id"])
    assert sorted(seen) == sorted(set(rows["eps_id"].to_pylist()))


def test_minari_round_trip_every_transition(plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from mixagent.trajectories.export import EXPORT_MARKER, export_minari

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))  # nothing may be written under ~/.minari
    monkeypatch.delenv("MINARI_DATASETS_PATH", raising=False)
    out = tmp_path / "minari"
    r = export_minari(plain, out)
    assert r.dataset_id == "mixagent/micro-plain-v0" and r.alternatives_left_out == 0
    assert r.transitions == 9 and len(r.episodes) == 3
    assert "MINARI_DATASETS_PATH" not in os.environ and not home.exists()
    marker = json.loads((out / EXPORT_MARKER).read_text())
    assert marker["episodes"] == r.episodes and marker["observation_layout"]["size"] == r.observation_size

    ds = _load(out, r.dataset_id, monkeypatch)
    assert (out / "mixagent" / "micro-plain-v0" / "data").is_dir()
    card = json.loads((plain / "card.json").read_text())
    k = len(card["domain_names"])
    # the env's spaces: flatten of Dict(domains=Box(K, F), global=Box(G)), and Box(-1, 1, (K,))
    from gymnasium import spaces

    from mixagent.envs.observation import observation_space

    obs_spec = card["env_spec"]["spec"]["observation"]
    want_obs = spaces.flatten_space(observation_space(k, obs_spec["loss_max"], obs_spec["score_max"]))
    assert ds.observation_space == want_obs and ds.observation_space.dtype == np.float32
    assert ds.action_space == spaces.Box(-1.0, 1.0, (k,), np.float32)
    assert ds.storage.metadata["data_format"] == "arrow"
    _check_every_transition(plain, ds, continued_only=False)
    # the flat observation unflattens into the env's Dict, as the card's layout says
    ep = next(ds.iterate_episodes())
    d = spaces.unflatten(observation_space(k, obs_spec["loss_max"], obs_spec["score_max"]),
                         ep.observations[1])
    assert d["domains"].shape == tuple(card["observation_layout"]["domains"]["shape"])


def test_branch_alternatives_are_left_out_and_counted(branched: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    from mixagent.trajectories.export import export_minari

    r = export_minari(branched, tmp_path / "m", dataset_id="ns/branched-v3")
    assert r.transitions == 6 and r.alternatives_left_out == 6
    _check_every_transition(branched, _load(tmp_path / "m", "ns/branched-v3", monkeypatch),
                            continued_only=True)


def test_cli_export_overwrite_and_bad_input(plain: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "m"
    code, stdout, _ = run_main(["trajectories", "export", str(plain), "--format", "minari",
                                "--out", str(out)], monkeypatch, capsys)
    assert code == 0 and "mixagent/micro-plain-v0" in stdout and "3 episodes" in stdout
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    # OUT exists: refused, untouched
    code, _, err = run_main(["trajectories", "export", str(plain), "--out", str(out)], monkeypatch, capsys)
    assert code != 0 and "--overwrite" in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    # --overwrite replaces a previous export
    code, _, _ = run_main(["trajectories", "export", str(plain), "--out", str(out), "--overwrite",
                           "--dataset-id", "mixagent/again-v1"], monkeypatch, capsys)
    assert code == 0 and (out / "mixagent" / "again-v1").is_dir()
    assert not (out / "mixagent" / "micro-plain-v0").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers
    # ...but never a folder that is not an export
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("precious")
    code, _, err = run_main(["trajectories", "export", str(plain), "--out", str(mine), "--overwrite"],
                            monkeypatch, capsys)
    assert code != 0 and "not a mixagent Minari export" in err
    assert (mine / "keep.txt").read_text() == "precious"
    # not a collection
    code, _, err = run_main(["trajectories", "export", str(tmp_path / "nothing"), "--out",
                             str(tmp_path / "m2")], monkeypatch, capsys)
    assert code != 0 and "not found" in err and not (tmp_path / "m2").exists()
    code, _, err = run_main(["trajectories", "export", str(mine), "--out", str(tmp_path / "m2")],
                            monkeypatch, capsys)
    assert code != 0 and "mixagent collect" in err and not (tmp_path / "m2").exists()
    # unknown format, bad id
    code, _, err = run_main(["trajectories", "export", str(plain), "--format", "hdf5", "--out",
                             str(tmp_path / "m3")], monkeypatch, capsys)
    assert code != 0 and "minari" in err
    code, _, err = run_main(["trajectories", "export", str(plain), "--out", str(tmp_path / "m3"),
                             "--dataset-id", "bad id!"], monkeypatch, capsys)
    assert code != 0 and "dataset id" in err and not (tmp_path / "m3").exists()


def test_missing_minari_names_the_extra(plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from mixagent.trajectories.export import ExportError, export_minari

    monkeypatch.setitem(sys.modules, "minari", None)  # import minari -> ImportError
    with pytest.raises(ExportError, match=r"pip install -e '\.\[minari\]'"):
        export_minari(plain, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_family_with_mixed_domain_counts_exports_one_scenario(micro_spec: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    from mixagent.trajectories.export import ExportError, export_minari

    d = yaml.safe_load(FAMILY_MICRO.read_text(encoding="utf-8"))
    d["family"]["base"] = str(micro_spec)
    fam = tmp_path / "family.yaml"
    fam.write_text(yaml.safe_dump(d), encoding="utf-8")
    coll = tmp_path / "fam"
    collect(env_spec=str(fam), out=str(coll), episodes=4, seed=2, progress=False)
    card = json.loads((coll / "card.json").read_text())
    ks = {sid: len(s["domain_names"]) for sid, s in card["scenarios"].items()}
    assert len(set(ks.values())) > 1, ks  # the seed is chosen so that domain counts differ
    with pytest.raises(ExportError, match="--scenario"):
        export_minari(coll, tmp_path / "all")
    assert not (tmp_path / "all").exists()
    sid = sorted(ks)[0]
    r = export_minari(coll, tmp_path / "one", scenario=sid)
    assert r.num_domains == ks[sid] and r.dataset_id == f"mixagent/fam-{sid}-v0"
    ds = _load(tmp_path / "one", r.dataset_id, monkeypatch)
    rows = _shard_rows(coll)
    rows = rows.filter(pa.compute.equal(rows["scenario"], sid))
    assert ds.total_steps == rows.num_rows and ds.action_space.shape == (ks[sid],)
    obs = np.concatenate([e.observations[:-1] for e in ds.iterate_episodes()])
    assert np.array_equal(obs, np.asarray(rows["obs"].to_pylist(), np.float32))
    with pytest.raises(ExportError, match="no episodes of scenario"):
        export_minari(coll, tmp_path / "none", scenario="nope")
