"""Issue 13's must-show: a tiny agent trained end to end on a tiny scenario-family collection
acts on a domain count it never saw, uses the v2 observation groups, and is selected by its
held-out family score.

The family is ``envs/family-micro-v2.yaml`` (benchmark-scored micro scenarios with alignment and
benchmark-score observations) with its base's data pointed at the session's built tiny corpus, so
it shares the session's cached micro base (same model, pre-training and data).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mixagent.trajectories import collect

pytestmark = pytest.mark.usefixtures("micro_cache_env")

FAMILY_MICRO_V2 = Path(__file__).resolve().parents[1] / "envs" / "family-micro-v2.yaml"
SEED = 1
EPISODES = 3


@pytest.fixture(scope="module")
def family_file(micro_spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = yaml.safe_load(FAMILY_MICRO_V2.read_text(encoding="utf-8"))
    d["family"]["base"]["data"] = yaml.safe_load(micro_spec.read_text(encoding="utf-8"))["data"]
    path = tmp_path_factory.mktemp("family-v2") / "family.yaml"
    path.write_text(yaml.safe_dump(d), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def family_traj(family_file: Path, micro_cache: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> Path:
    out = tmp_path_factory.mktemp("family-traj") / "c"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXAGENT_CACHE", str(micro_cache))
        collect(env_spec=str(family_file), out=str(out), episodes=EPISODES, seed=SEED,
                progress=False)
    return out


def _unseen_scenario(family: Any, seen_k: set[int]) -> tuple[Any, int]:
    """A scenario of the family (another sampling seed) whose domain count the collection lacks."""
    from mixagent.envs.setup import resolve_spec

    for i in range(200):
        sc = family.scenario(99, i)
        k = len(resolve_spec(sc.spec).domains)
        if k not in seen_k:
            return sc, k
    raise AssertionError(f"no scenario with a domain count outside {sorted(seen_k)}")


def test_family_collection_reads_per_scenario_spaces_and_groups(family_traj: Path, tmp_path: Path):
    """Every row gets its own scenario's domain space and observation groups — from the card,
    and identically by re-sampling when the collection has no card yet (still running)."""
    from mixagent.policies.features import FeatureSpec
    from mixagent.policies.training.data import read_trajectories, transitions_from_rows

    rows, meta = read_trajectories([family_traj])
    assert meta["observation_features"] == ["alignment", "benchmark_scores"]
    assert meta["action_scale"] == 3.0 and meta["action_floor"] == 0.01  # the family base's
    card = json.loads((family_traj / "card.json").read_text())
    for r in rows:
        entry = card["scenarios"][r["scenario"]]
        assert list(r["domain_space"].names) == list(r["domain_names"]) == entry["domain_names"]
        assert r["obs_features"] == ["benchmark_scores", "alignment"]
    (fam,) = meta["families"]
    assert fam["seed"] == SEED and fam["episodes"] == list(range(EPISODES))
    data = transitions_from_rows(rows, FeatureSpec(observation=meta["observation_features"]),
                                 meta["action_scale"], meta["action_floor"])
    ks = {len(s.names) for s in data.spaces}
    assert len(ks) > 1, "the collection should mix domain counts"
    assert data.mask.shape[1] == max(ks) and np.isfinite(data.dom).all()

    no_card = tmp_path / "no-card"
    shutil.copytree(family_traj, no_card)
    (no_card / "card.json").unlink()
    rows2, _ = read_trajectories([no_card])
    by_eps = {r["eps_id"]: r["domain_space"] for r in rows}
    for r in rows2:
        assert r["domain_space"] == by_eps[r["eps_id"]]


def test_agent_trained_on_a_family_acts_on_an_unseen_domain_count(family_traj: Path,
                                                                   family_file: Path,
                                                                   tmp_path: Path):
    from mixagent.envs.family import load_family
    from mixagent.envs.proxy_env import ProxyCPTEnv
    from mixagent.policies import load_policy
    from mixagent.policies.protocol import run_episode
    from mixagent.policies.training.api import TrainConfig, train_policy
    from mixagent.trajectories import load

    cfg = TrainConfig(algo="cql", trajectories=[str(family_traj)], hyperparameters={
        "bc_steps": 8, "cql_steps": 8, "batch_size": 16, "eval_every": 4, "val_fraction": 0.0,
        "network": {"hidden": 16}, "selection": {"scenarios": 1, "seeds": [0]}})
    res = train_policy(cfg, tmp_path / "agent", progress=False)
    agent = load_policy(tmp_path / "agent")  # what was saved, no pickle
    # the v2 observation groups are inputs
    assert {"align_source", "align_target"} <= set(agent.domain_inputs)
    assert {"source_benchmark", "target_benchmark"} <= set(agent.global_inputs)

    # selected by the held-out family score, on scenarios the collection never had
    sel = agent.provenance["selection"]
    trained_ids = set(load(family_traj).to_pandas().scenario)
    assert sel["scenarios"] and not {s["id"] for s in sel["scenarios"]} & trained_ids
    assert sel["scenario_seed"] != SEED
    assert [c["phase"] for c in sel["candidates"]] == ["bc", "cql"]
    assert all(np.isfinite(c["score"]) for c in sel["candidates"])
    assert agent.provenance["best"]["criterion"] == "heldout_score"
    assert res.details["best"]["heldout_score"] == max(c["score"] for c in sel["candidates"])
    # uniform scored once on the same scenarios and seeds; the chosen one compared with it, paired
    ref = sel["references"]["baseline:uniform"]
    assert set(ref["per_scenario"]) == {s["id"] for s in sel["scenarios"]}
    best_row = max(sel["candidates"], key=lambda c: c["score"])
    vs = sel["best_versus_references"]["baseline:uniform"]
    assert vs["scenarios"] == 1
    assert vs["mean_difference"] == pytest.approx(best_row["score"] - ref["score"])

    # it acts on a domain count that never appeared in the collection
    family = load_family(family_file)
    seen_k = {len(n) for n in load(family_traj).to_pandas().domain_names}
    scenario, k = _unseen_scenario(family, seen_k)
    env = ProxyCPTEnv(scenario.spec, progress=False)
    try:
        ep = run_episode(agent, env, seed=3, keep_observations=True)
    finally:
        env.close()
    w = ep.weights
    assert w.shape == (scenario.spec.cpt.num_steps, k)
    assert np.isfinite(w).all() and (w >= 0).all() and np.allclose(w.sum(1), 1.0)

    # and the alignment columns are part of what it acts on
    from mixagent.data.space import DomainSpace
    from mixagent.envs.observation import ALIGNMENT_FEATURES, feature_layout
    from mixagent.envs.setup import resolve_spec

    obs = {key: np.array(v, copy=True) for key, v in ep.observations[1].items()}
    cols = [feature_layout(list(scenario.spec.observation.features)).domains.index(n)
            for n in ALIGNMENT_FEATURES]
    space = DomainSpace.from_env(resolve_spec(scenario.spec))
    agent.reset(space, seed=0)
    before = agent.act(obs)
    obs["domains"][:, cols] = np.linspace(-1.0, 1.0, k)[:, None]
    agent.reset(space, seed=0)
    after = agent.act(obs)
    assert not np.allclose(before, after)


def test_learning_curve_from_selected_policies(family_traj: Path, tmp_path: Path):
    """Two trainings on nested shares of one collection, selected on the same held-out scenarios,
    make a learning curve (table, JSON, PNG) read from their cards; a policy selected on other
    scenarios is refused."""
    from typer.testing import CliRunner

    from mixagent.cli.main import app
    from mixagent.errors import ConfigError
    from mixagent.evaluation.learning_curve import learning_curve
    from mixagent.policies.training.api import TrainConfig, train_policy

    def train(name: str, fraction: float, scenario_seed: int | None = None) -> Path:
        cfg = TrainConfig(algo="bc", trajectories=[str(family_traj)], hyperparameters={
            "bc_steps": 4, "batch_size": 8, "eval_every": 2, "val_fraction": 0.0,
            "data_fraction": fraction, "network": {"hidden": 8},
            "selection": {"scenarios": 1, "seeds": [0], "scenario_seed": scenario_seed}})
        train_policy(cfg, tmp_path / name, progress=False)
        return tmp_path / name

    full = train("full", 1.0)
    hp = {"bc_steps": 4, "batch_size": 8, "eval_every": 2, "val_fraction": 0.0, "network": {"hidden": 8},
          "selection": {"scenarios": 1, "seeds": [0]}}
    (tmp_path / "part.yaml").write_text(json.dumps(hp), encoding="utf-8")
    part = tmp_path / "part"  # the point of a share, by the CLI flag beside the same config
    res = CliRunner().invoke(app, ["train", str(family_traj), "--algo", "bc", "--config",
                                   str(tmp_path / "part.yaml"), "--data-fraction", "0.34",
                                   "--out", str(part), "--no-progress"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["policy", "curve", str(full), str(part), "--out",
                                   str(tmp_path / "curve")])
    assert res.exit_code == 0, res.output
    points = json.loads((tmp_path / "curve" / "curve.json").read_text())
    assert [p["policy"] for p in points] == ["part", "full"]  # by transitions
    assert points[0]["episodes"] == 1 and points[1]["episodes"] == EPISODES
    assert points[0]["transitions"] < points[1]["transitions"]
    for p in points:
        assert set(p["references"]) == {"baseline:uniform"}
        assert p["versus"]["baseline:uniform"]["mean_difference"] == pytest.approx(
            p["heldout_score"] - p["references"]["baseline:uniform"])
    assert (tmp_path / "curve" / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "| part | 0.34 | 1 |" in (tmp_path / "curve" / "curve.md").read_text()
    other = train("other", 1.0, scenario_seed=7_000_999)
    with pytest.raises(ConfigError, match="other held-out scenarios"):
        learning_curve([full, other])


def test_card_summarises_a_family_of_domain_spaces():
    """A policy trained on hundreds of sampled scenarios gets one card line per family, not one
    per scenario; a few spaces are still listed one by one."""
    from mixagent.policies.format import CARD_SPACES, render_card

    def space(k: int, src: int) -> dict[str, Any]:
        return {"name": "fam", "names": [f"d{i}" for i in range(k)],
                "roles": ["source"] * src + ["target"] * (k - src)}

    many = [space(5 + i, 2 + i % 3) for i in range(CARD_SPACES + 5)]
    card = render_card({"kind": "agent", "params": {}, "provenance": {"trained_on": many}})
    section = card.split("## Trained on")[1]
    assert section.count("- `fam`") == 1
    assert f"{CARD_SPACES + 5} domain spaces, 5–{4 + CARD_SPACES + 5} domains (2–4 source" in section
    few = render_card({"kind": "agent", "params": {},
                       "provenance": {"trained_on": [space(6, 3), space(8, 4)]}})
    assert "- `fam`: 6 domains (3 source, 3 target)" in few
    assert "- `fam`: 8 domains (4 source, 4 target)" in few


def test_selection_reuses_cached_scores_and_reruns_a_bad_file(family_file: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture):
    """A reference scored at one training is read back at the next (no episode runs); a cached
    file that does not match its key is ignored with a warning and its episode runs again."""
    import mixagent.policies.training.selection as selection
    from mixagent.envs.family import load_family
    from mixagent.policies.training.selection import HeldOutSelector, SelectionConfig

    cfg = SelectionConfig(scenarios=1, seeds=[0, 1], scenario_seed=7_000_500,
                          references=["baseline:uniform"])
    family = load_family(family_file)
    real, calls = selection.run_episode, []

    def counted(*a: Any, **k: Any) -> Any:
        calls.append(a[2])
        return real(*a, **k)

    monkeypatch.setattr(selection, "run_episode", counted)

    def score(cache: SelectionConfig = cfg) -> tuple[float, dict[str, Any]]:
        sel = HeldOutSelector(cache, family, cache_root=tmp_path / "scores")
        try:
            ref = sel.score_references()["baseline:uniform"]["score"]
            return ref, sel.record()
        finally:
            sel.close()

    first, rec = score()
    assert calls == [0, 1] and rec["episodes_cached"] == 0
    files = sorted((tmp_path / "scores").rglob("seed-*.json"))
    assert [f.name for f in files] == ["seed-0.json", "seed-1.json"]

    again, rec = score()
    assert again == first and calls == [0, 1] and rec["episodes_cached"] == 2

    bad = json.loads(files[1].read_text())
    bad["seed"] = 7  # the file no longer matches its key
    files[1].write_text(json.dumps(bad))
    with caplog.at_level("WARNING"):
        third, rec = score()
    assert "does not match its key" in caplog.text
    assert third == first and calls == [0, 1, 1] and rec["episodes_cached"] == 1

    off, rec = score(cfg.model_copy(update={"cache": False}))
    assert off == first and calls == [0, 1, 1, 0, 1] and rec["episodes_cached"] == 0


def test_a_policy_has_one_content_id_before_saving_and_after_loading(tmp_path: Path):
    """Selection keys its cache by a policy's content in memory: the same before saving and
    after loading, blind to provenance, layout and key order, changed by any tensor value."""
    import torch
    from safetensors.torch import load_file

    from mixagent.policies.format import MODEL_NAME, POLICY_FORMAT, content_id, read_config, save_policy_dir

    config = {"format": POLICY_FORMAT, "kind": "agent", "params": {"hidden": 4},
              "provenance": {"note": "not hashed"}}
    tensors = {"b": torch.zeros(3), "a": torch.arange(6.0).reshape(2, 3).t()}  # not contiguous
    save_policy_dir(tmp_path / "p", config, tensors)
    loaded = load_file(tmp_path / "p" / MODEL_NAME)
    one = content_id(config, tensors)
    assert content_id(read_config(tmp_path / "p"), loaded) == one
    assert content_id({**config, "provenance": {}}, dict(reversed(list(loaded.items())))) == one
    assert content_id(config, {**tensors, "b": torch.tensor([0.0, 0.0, 1e-7])}) != one
    assert content_id(config, {**tensors, "b": torch.zeros(3, dtype=torch.float64)}) != one
    assert content_id({**config, "params": {"hidden": 5}}, tensors) != one


def test_saving_one_policy_twice_writes_one_file(tmp_path: Path):
    """Its policy id (evaluation's cache key) hashes the file, so the bytes must not vary from
    save to save (safetensors orders several metadata keys arbitrarily; one key is safe)."""
    import torch

    from mixagent.policies.format import MODEL_NAME, POLICY_FORMAT, policy_id, save_policy_dir

    config = {"format": POLICY_FORMAT, "kind": "agent", "params": {}}
    tensors = {"w": torch.arange(4.0), "b": torch.ones(2)}
    files = set()
    for i in range(8):
        save_policy_dir(tmp_path / f"p{i}", config, tensors)
        files.add((tmp_path / f"p{i}" / MODEL_NAME).read_bytes())
    assert len(files) == 1
    assert len({policy_id(config, b) for b in files}) == 1

