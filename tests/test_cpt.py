"""Production CPT through the real ``transformers.Trainer`` on a tiny Llama (single process)."""

from __future__ import annotations

import json
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
from mixagent.cpt.state import load_state
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
                                             tmp_path: Path) -> None:
    """6 steps + resume for 6 steps == 12 steps: same samples, same schedule, same decisions."""
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
    rest_ids: list[int] = []
    rec_rest = Recorder()
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


def test_learned_policy_drives_run(synthetic_datadir: Path, model_dir: Path, tmp_path: Path) -> None:
    from mixagent.policies.agent import MixingAgent

    agent = MixingAgent()
    agent.provenance = {"trained_on": [{"name": "other", "names": ["a", "b"]}]}
    pdir = agent.save(tmp_path / "agent")
    summary = run_cpt(_config(synthetic_datadir, model_dir, tmp_path / "run", max_steps=4,
                              reweight_every=2, policy=f"policy:{pdir}"))
    assert len(summary["decisions"]) == 2
    assert any("2 domains" in n for n in summary["notes"])  # the mismatch is reported


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
    with pytest.raises(ConfigError, match="unknown task"):
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
