"""Production CPT through the real ``transformers.Trainer`` on a tiny Llama (single process)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from conftest import CPT_SEQ as SEQ
from conftest import cpt_config, stop_at
from transformers import TrainerCallback

from mixagent.cpt.config import CPTConfig
from mixagent.cpt.dataset import make_sampler, replay
from mixagent.cpt.report import PLOT_NAME, SUMMARY_NAME
from mixagent.cpt.run import run_cpt
from mixagent.cpt.state import STATE_NAME, load_state
from mixagent.data.manifest import DataDir
from mixagent.errors import ConfigError


def _config(data: Path, model: Path, out: Path, **kw: Any) -> CPTConfig:
    """12 steps, a decision every 3 (uniform unless overridden)."""
    return cpt_config(data, model, out, **kw)


class Recorder(TrainerCallback):
    """Keeps what the Trainer logs (what report_to integrations receive)."""

    def __init__(self) -> None:
        self.logs: list[dict[str, float]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> None:
        self.logs.append({**(logs or {}), "step": state.global_step})


def test_baseline_run_completes_and_logs_weights(synthetic_datadir: Path, model_dir: Path,
                                                 tmp_path: Path) -> None:
    rec = Recorder()
    cfg = _config(synthetic_datadir, model_dir, tmp_path / "run", max_steps=6, plot=True,
                  policy="baseline:fixed_ratio?source=0.25")
    summary = run_cpt(cfg, callbacks=[rec])
    weight_logs = [entry for entry in rec.logs if "mixture/weight/prose/a" in entry]
    assert [entry["step"] for entry in weight_logs] == [0, 3]
    assert any("loss" in entry for entry in rec.logs)  # the Trainer's own loss is logged too
    w = summary["decisions"][0]["weights"]
    assert sum(w) == pytest.approx(1.0)
    src = [wi for wi, r in zip(w, summary["roles"], strict=True) if r == "source"]
    assert sum(src) == pytest.approx(0.25)
    assert set(summary["final"]["scores"]) == {"source", "target", "balanced"}
    assert (tmp_path / "run" / SUMMARY_NAME).is_file() and (tmp_path / "run" / PLOT_NAME).is_file()
    on_disk = json.loads((tmp_path / "run" / SUMMARY_NAME).read_text())
    assert on_disk["schedule"][0]["start_sample"] == 0
    assert (tmp_path / "run" / "final-model" / "tokenizer.json").is_file()
    assert summary["timing"]["sampling_seconds"] > 0


def test_resume_reproduces_uninterrupted_run(synthetic_datadir: Path, model_dir: Path,
                                             tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """6 steps + resume for 6 steps == 12 steps: same samples, same schedule, same decisions;
    from the policy state saved in the checkpoint, and from a checkpoint written before policy
    states were saved (the policy is then replayed through its decisions)."""
    policy = "baseline:velocitune?eta=20"  # an online policy: its state must survive the restart
    full_ids: list[int] = []
    rec_full = Recorder()
    full = run_cpt(_config(synthetic_datadir, model_dir, tmp_path / "full", policy=policy,
                           save_steps=6),
                   callbacks=[rec_full], on_read=lambda ids: full_ids.extend(ids.tolist()))

    part_ids: list[int] = []
    out = tmp_path / "parts"
    run_cpt(_config(synthetic_datadir, model_dir, out, policy=policy, save_steps=6),
            callbacks=[stop_at(6)], on_read=lambda ids: part_ids.extend(ids.tolist()))
    saved = load_state(out / "checkpoint-6")
    assert saved.consumed == 6 * 2 and saved.global_step == 6
    assert saved.policy_state and saved.policy_state["t"] == 3  # decisions at steps 0, 3, 6
    legacy, tampered = tmp_path / "legacy", tmp_path / "tampered"
    for copy in (legacy, tampered):
        shutil.copytree(out, copy)
    rest_ids: list[int] = []
    rec_rest = Recorder()
    caplog.set_level(logging.INFO, logger="mixagent.cpt.controller")
    resumed = run_cpt(_config(synthetic_datadir, model_dir, out, policy=policy, save_steps=6,
                              resume=True),
                      callbacks=[rec_rest], on_read=lambda ids: rest_ids.extend(ids.tolist()))

    per_step = 2
    assert part_ids[: 6 * per_step] + rest_ids[: 6 * per_step] == full_ids[: 12 * per_step]
    assert resumed["schedule"] == full["schedule"]
    assert len(full["schedule"]) > 1  # the policy really changed the weights
    assert [d["weights"] for d in resumed["decisions"]] == [d["weights"] for d in full["decisions"]]
    # the model trained on the same batches: identical held-out losses at every decision and at the end
    assert [d["losses"] for d in resumed["decisions"]] == [d["losses"] for d in full["decisions"]]
    assert resumed["final"]["losses"] == pytest.approx(full["final"]["losses"], rel=1e-6)
    # weights logged after the restart are those of the uninterrupted run
    logged_full = [e for e in rec_full.logs if "mixture/weight/prose/a" in e and e["step"] > 6]
    logged_rest = [e for e in rec_rest.logs if "mixture/weight/prose/a" in e]
    assert [e["mixture/weight/prose/a"] for e in logged_rest] == [e["mixture/weight/prose/a"] for e in logged_full]
    mixer_log = [r.getMessage() for r in caplog.records if r.name == "mixagent.cpt.controller"]
    assert any("policy state loaded" in m for m in mixer_log)
    assert not any("differs" in m or "replays differently" in m for m in mixer_log)

    # a checkpoint written before policy states were saved: the replay rebuilds the same state
    _edit_state(legacy / "checkpoint-6", lambda raw: raw.pop("policy_state"))
    old = run_cpt(_config(synthetic_datadir, model_dir, legacy, policy=policy, save_steps=6,
                          resume=True))
    assert [d["weights"] for d in old["decisions"]] == [d["weights"] for d in full["decisions"]]
    # the saved state, not a replay, drives the decisions after the restart
    _edit_state(tampered / "checkpoint-6",
                lambda raw: raw["policy_state"].update(log_alpha=[0.0, 0.0, 0.0, -50.0]))
    edited = run_cpt(_config(synthetic_datadir, model_dir, tampered, policy=policy, save_steps=6,
                             resume=True))
    assert [d["weights"] for d in edited["decisions"][:3]] == [d["weights"] for d in full["decisions"][:3]]
    assert edited["decisions"][3]["weights"] != full["decisions"][3]["weights"]


def _edit_state(checkpoint: Path, edit: Any) -> None:
    path = checkpoint / STATE_NAME
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


def test_learned_policy_drives_run(synthetic_datadir: Path, model_dir: Path, tmp_path: Path) -> None:
    """The run's weights are the agent's answers to the recorded observations, and they are not
    what any fixed rule gives (an untrained agent is uniform, so this one is perturbed)."""
    import torch

    from mixagent.cpt.checks import domain_space
    from mixagent.policies.agent import MixingAgent
    from mixagent.policies.protocol import load_policy

    torch.manual_seed(7)
    agent = MixingAgent(network={"hidden": 16}, action_scale=6.0)
    with torch.no_grad():  # a random init has a zero output head (uniform weights)
        for p in agent.network.parameters():
            p.add_(torch.randn_like(p) * 0.4)
    agent.provenance = {"trained_on": [{"name": "other", "names": ["a", "b"]}]}
    pdir = agent.save(tmp_path / "agent")
    out = tmp_path / "run"
    summary = run_cpt(_config(synthetic_datadir, model_dir, out, max_steps=6, reweight_every=2,
                              save_steps=6, policy=f"policy:{pdir}"))
    assert any("2 domains" in n for n in summary["notes"])  # the mismatch is reported
    decisions = load_state(out / "checkpoint-6").decisions  # with the observations
    assert [d.weights for d in decisions] == [d["weights"] for d in summary["decisions"]]
    assert len(decisions) == 3

    ref = load_policy(pdir)
    ref.reset(domain_space(DataDir(synthetic_datadir), summary["domains"]), 0)
    for dec in decisions:
        if dec.train_loss is not None:
            ref.feedback(train_loss=dec.train_loss)
        obs = {k: np.asarray(v, dtype=np.float32) for k, v in dec.observation.items()}
        assert dec.weights == ref.act(obs).tolist()
    w = np.array([d.weights for d in decisions])
    assert (w.max(axis=1) - w.min(axis=1) > 0.03).all()  # far from uniform at every decision
    assert np.abs(w[1:] - w[:-1]).max() > 0.005  # and it reacts to what it observes


def test_mismatches_are_clear_errors(synthetic_datadir: Path, model_dir: Path,
                                     tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    (bare / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match="no tokenizer"):
        run_cpt(_config(synthetic_datadir, bare, tmp_path / "o1"))
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    spec = json.loads((other / "tokenizer.json").read_text())
    spec["model"]["vocab"] = {k + "x": v for k, v in spec["model"]["vocab"].items()}
    (other / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match="tokenizer mismatch"):
        run_cpt(_config(synthetic_datadir, other, tmp_path / "o2"))
    with pytest.raises(ConfigError, match="not in the data directory"):
        run_cpt(_config(synthetic_datadir, model_dir, tmp_path / "o3", domains=["prose/a", "nope"]))
    with pytest.raises(ConfigError, match="unknown benchmark"):
        run_cpt(_config(synthetic_datadir, model_dir, tmp_path / "o5",
                        eval={"tasks": [{"name": "nope"}]}))
    with pytest.raises(ConfigError, match="reward term"):
        run_cpt(_config(synthetic_datadir, model_dir, tmp_path / "o6",
                        reward={"target_terms": {"nope.exact_match": 1.0}}))
    with pytest.raises(ConfigError, match="no checkpoint"):
        run_cpt(_config(synthetic_datadir, model_dir, tmp_path / "o4", resume=True))


def test_replay_matches_continuous_stream(synthetic_datadir: Path) -> None:
    data = DataDir(synthetic_datadir)
    names = data.domain_names
    a = make_sampler(data, SEQ, names, seed=3)
    a.set_weights([0.7, 0.1, 0.1, 0.1], start=0)
    first = a.next_flat_indices(40)
    a.set_weights([0.1, 0.1, 0.1, 0.7], start=50)
    rest = a.next_flat_indices(60)
    b = make_sampler(data, SEQ, names, seed=3)
    replay(b, [(s, w) for s, w in a.schedule], 40)
    assert np.array_equal(b.next_flat_indices(60), rest)
    assert first.size == 40


def test_a_family_agent_gets_one_domain_space_note(caplog: pytest.LogCaptureFixture) -> None:
    """An agent trained on a family has one trained space per sampled scenario: a run on another
    space gets one note (and one warning) that summarises them, not one per scenario."""
    from types import SimpleNamespace

    from mixagent.cpt.checks import policy_mismatch

    def spaces(*ks: int) -> list[dict[str, object]]:
        return [{"name": "fam", "names": [f"d{i}" for i in range(k)]} for k in ks]

    run = SimpleNamespace(names=[f"r{i}" for i in range(19)])
    family = SimpleNamespace(provenance={"trained_on": spaces(17, 24, 32, 24)})
    with caplog.at_level("WARNING"):
        notes = policy_mismatch(family, run)
    assert notes == ["policy trained on 4 other domain spaces (fam; 17–32 domains), this run has 19"]
    assert len(caplog.records) == 1
    one = SimpleNamespace(provenance={"trained_on": spaces(6)})
    assert policy_mismatch(one, run) == ["policy trained on 6 domains (fam), this run has 19"]
    same = SimpleNamespace(provenance={"trained_on": [*spaces(6), {"name": "x", "names": run.names}]})
    assert policy_mismatch(same, run) == []
