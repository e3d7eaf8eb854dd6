"""Faults a new user or a fault probe hits in ``mixagent cpt`` (issue 15): every one is a clear
error that names the file or option and says what to do, and resume stays exact."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from conftest import CPT_SEQ as SEQ
from conftest import cpt_config, stop_at
from typer.testing import CliRunner

from mixagent.cli.main import app
from mixagent.cpt.checks import check_model_dir
from mixagent.cpt.config import CPTConfig
from mixagent.cpt.outputs import check_out_dir
from mixagent.cpt.report import SUMMARY_NAME
from mixagent.cpt.run import run_cpt
from mixagent.cpt.state import STATE_NAME, load_state
from mixagent.data.manifest import DataDir
from mixagent.errors import ConfigError, MixagentError
from mixagent.policies.protocol import load_policy

REPO = Path(__file__).resolve().parents[1]
SHIPPED_AGENT = REPO / "policies" / "prose-to-math-agent-v1"


def _config(data: Path, model: Path, out: Path, **kw: Any) -> CPTConfig:
    """4 steps, a decision and a checkpoint every 2: the smallest run with a resume point."""
    return cpt_config(data, model, out, **{"policy": "baseline:velocitune?eta=20", "max_steps": 4,
                                           "reweight_every": 2, "save_steps": 2, **kw})


@pytest.fixture(scope="module")
def finished(synthetic_datadir: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, dict[str, Any]]:
    """A finished 4-step run (checkpoints 2 and 4) and its summary; tests copy it to mutate it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    return out, run_cpt(_config(synthetic_datadir, model_dir, out, seed=5))


def _copy_run(finished: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    return out


# -- 2: an --out that holds a run needs --resume or --overwrite ---------------------------------
def test_out_holding_a_run_is_refused_without_resume_or_overwrite(
        synthetic_datadir: Path, model_dir: Path, finished: tuple[Path, dict[str, Any]],
        tmp_path: Path) -> None:
    out = _copy_run(finished, tmp_path)
    before = (out / "checkpoint-4" / STATE_NAME).read_bytes()
    with pytest.raises(ConfigError, match=r"already holds a CPT run.*--resume.*--overwrite"):
        run_cpt(_config(synthetic_datadir, model_dir, out, seed=5))
    assert (out / "checkpoint-4" / STATE_NAME).read_bytes() == before  # nothing was touched
    with pytest.raises(ConfigError, match="contradict"):
        run_cpt(_config(synthetic_datadir, model_dir, out, resume=True, overwrite=True))

    # --overwrite refuses a folder with files a run does not write, and deletes nothing
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"--overwrite.*notes\.txt"):
        run_cpt(_config(synthetic_datadir, model_dir, out, overwrite=True))
    assert (out / "notes.txt").is_file() and (out / "checkpoint-4").is_dir()
    (out / "notes.txt").unlink()

    # --overwrite replaces the previous run: no checkpoint of it survives
    (out / "incomplete-checkpoint-9").mkdir()
    summary = run_cpt(_config(synthetic_datadir, model_dir, out, overwrite=True, max_steps=2,
                              save_steps=None))
    assert sorted(p.name for p in out.iterdir()) == ["final-model", SUMMARY_NAME]
    assert summary["max_steps"] == 2

    # an empty existing folder is a fresh start
    empty = tmp_path / "empty"
    empty.mkdir()
    run_cpt(_config(synthetic_datadir, model_dir, empty, max_steps=2, save_steps=None))
    assert (empty / SUMMARY_NAME).is_file()


def test_overwrite_never_deletes_an_input_or_foreign_files(tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "final-model").mkdir(parents=True)
    with pytest.raises(ConfigError, match="which this run reads"):
        check_out_dir(out, resume=False, overwrite=True, keep=[out / "final-model"])
    (out / "other").mkdir()
    with pytest.raises(ConfigError, match="already holds a CPT run"):
        check_out_dir(out, resume=False, overwrite=False)
    (out / "final-model").rmdir()
    with pytest.raises(ConfigError, match="holds no CPT run"):
        check_out_dir(out, resume=False, overwrite=False)
    assert check_out_dir(out, resume=True, overwrite=False) == []


def test_cli_overwrite_and_resume_flags(synthetic_datadir: Path, model_dir: Path,
                                        finished: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out = _copy_run(finished, tmp_path)
    args = ["cpt", "--model", str(model_dir), "--data", str(synthetic_datadir), "--policy",
            "baseline:uniform", "--out", str(out), "--max-steps", "2", "--reweight-every", "2",
            "--seq-len", str(SEQ), "--batch-size", "2", "--eval-sequences", "2",
            "--trainer-arg", "disable_tqdm=true"]
    runner = CliRunner()
    res = runner.invoke(app, [*args, "--resume", "--overwrite"])
    assert isinstance(res.exception, ConfigError) and "contradict" in str(res.exception)
    res = runner.invoke(app, args)
    assert isinstance(res.exception, ConfigError) and "--overwrite" in str(res.exception)
    res = runner.invoke(app, [*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert not (out / "checkpoint-4").exists()


# -- 3 and 4: a resume under other settings is refused, naming saved and current values --------
def test_resume_refusal_names_saved_and_current_values(
        synthetic_datadir: Path, model_dir: Path, finished: tuple[Path, dict[str, Any]]) -> None:
    out = finished[0]  # every refusal happens before anything is written
    with pytest.raises(ConfigError, match=r"seed: the checkpoint has 5, this run has 0 \(rerun with --seed 5\)"):
        run_cpt(_config(synthetic_datadir, model_dir, out, resume=True, seed=0))
    with pytest.raises(ConfigError, match=r"the checkpoint has 2 \(--batch-size 2 .*this run has 1 "
                                          r"\(--batch-size 1 .*rerun with --batch-size 2"):
        run_cpt(_config(synthetic_datadir, model_dir, out, resume=True, seed=5, per_device_batch_size=1))
    with pytest.raises(ConfigError, match="--overwrite"):
        run_cpt(_config(synthetic_datadir, model_dir, out, resume=True, seed=0))


def test_resume_refuses_another_reweight_every_or_policy(
        synthetic_datadir: Path, model_dir: Path, finished: tuple[Path, dict[str, Any]]) -> None:
    out = finished[0]
    with pytest.raises(ConfigError, match=r"reweight_every: the checkpoint has 2, this run has 3 "
                                          r"\(rerun with --reweight-every 2\)"):
        run_cpt(_config(synthetic_datadir, model_dir, out, resume=True, seed=5, reweight_every=3))
    with pytest.raises(ConfigError, match=r"written under 'baseline:velocitune\?eta=20', this run has "
                                          r"'baseline:odm'"):
        run_cpt(_config(synthetic_datadir, model_dir, out, resume=True, seed=5, policy="baseline:odm"))


def test_resume_refuses_an_edited_policy_dir_but_not_a_moved_one(
        synthetic_datadir: Path, model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from mixagent.policies.agent import MixingAgent

    agent = MixingAgent().save(tmp_path / "agent")
    out = tmp_path / "run"
    run_cpt(_config(synthetic_datadir, model_dir, out, policy=f"policy:{agent}"), callbacks=[stop_at(2)])
    moved = tmp_path / "moved"
    shutil.copytree(agent, moved)
    # a re-copied policy is the same policy: its decisions replay and the run continues
    resumed = run_cpt(_config(synthetic_datadir, model_dir, out, policy=f"policy:{moved}", resume=True))
    assert [d["step"] for d in resumed["decisions"]] == [0, 2]
    # an edited one is not, even at the same path
    tensors = load_file(str(moved / "model.safetensors"))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 0.5
    save_file(tensors, str(moved / "model.safetensors"))
    with pytest.raises(ConfigError, match=r"policy: policy:.*moved has changed since the checkpoint"):
        run_cpt(_config(synthetic_datadir, model_dir, out, policy=f"policy:{moved}", resume=True))


# -- 5: a corrupt or missing model.safetensors names the file -----------------------------------
def test_corrupt_or_missing_policy_weights_name_the_file(synthetic_datadir: Path, model_dir: Path,
                                                         tmp_path: Path) -> None:
    from mixagent.policies.policy_explorers import make_explorer

    copy = tmp_path / "agent"
    shutil.copytree(SHIPPED_AGENT, copy)
    weights = copy / "model.safetensors"
    os.truncate(weights, 100)
    with pytest.raises(ConfigError, match=rf"{weights}: .*(truncated|corrupt).*re-train"):
        load_policy(copy)
    with pytest.raises(ConfigError, match=rf"{weights}: .*(truncated|corrupt)"):
        make_explorer(f"policy:{copy}")  # what 'mixagent collect --explorer policy:DIR' builds
    with pytest.raises(ConfigError, match=rf"{weights}: .*(truncated|corrupt)"):
        run_cpt(_config(synthetic_datadir, model_dir, tmp_path / "run", policy=f"policy:{copy}"))
    size = (SHIPPED_AGENT / "model.safetensors").stat().st_size
    shutil.copy2(SHIPPED_AGENT / "model.safetensors", weights)
    os.truncate(weights, size - 16)  # the header is intact, the last tensor is cut
    with pytest.raises(ConfigError, match="truncated"):
        load_policy(copy)
    weights.unlink()
    with pytest.raises(ConfigError, match=rf"{weights}: missing"):
        load_policy(copy)


# -- 5 and 10: an incomplete newest checkpoint falls back to the newest complete one ------------
@pytest.mark.parametrize("damage", ["no-mixture-state", "truncated-model"])
def test_resume_falls_back_past_an_incomplete_checkpoint(
        damage: str, synthetic_datadir: Path, model_dir: Path,
        finished: tuple[Path, dict[str, Any]], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = _copy_run(finished, tmp_path)
    if damage == "no-mixture-state":  # killed after the Trainer's save, before the mixture state
        (out / "checkpoint-4" / STATE_NAME).unlink()
        why = STATE_NAME
    else:
        os.truncate(out / "checkpoint-4" / "model.safetensors", 100)
        why = "model.safetensors is truncated"
    with caplog.at_level(logging.WARNING, logger="mixagent.cpt.outputs"):
        resumed = run_cpt(_config(synthetic_datadir, model_dir, out, resume=True, seed=5))
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "checkpoint-4" in warned and why in warned and "checkpoint-2" in warned
    assert (out / "incomplete-checkpoint-4").is_dir()  # kept for inspection, out of the rotation
    assert load_state(out / "checkpoint-4").global_step == 4  # written again by the resumed run
    # resumed from step 2, the run is still exactly the uninterrupted one
    full = finished[1]
    assert resumed["schedule"] == full["schedule"]
    assert [d["losses"] for d in resumed["decisions"]] == [d["losses"] for d in full["decisions"]]
    assert resumed["final"]["losses"] == pytest.approx(full["final"]["losses"], rel=1e-6)


def test_resume_without_a_complete_checkpoint_says_what_to_delete(
        synthetic_datadir: Path, model_dir: Path, finished: tuple[Path, dict[str, Any]],
        tmp_path: Path) -> None:
    out = _copy_run(finished, tmp_path)
    os.truncate(out / "checkpoint-4" / "model.safetensors", 100)
    (out / "checkpoint-2" / "optimizer.pt").unlink()
    with pytest.raises(ConfigError, match=r"no complete checkpoint.*checkpoint-4: model\.safetensors is "
                                          r"truncated.*checkpoint-2: no optimizer\.pt.*delete "
                                          r"checkpoint-4, checkpoint-2"):
        run_cpt(_config(synthetic_datadir, model_dir, out, resume=True, seed=5))


# -- 6: the tokenizer advice is a command that exists, and it works ------------------------------
def test_tokenizer_mismatch_advice_works(synthetic_datadir: Path, model_dir: Path,
                                         tmp_path: Path) -> None:
    from conftest import WORDS, synthetic_docs

    from mixagent.data.build import build_data_dir
    from mixagent.data.tokenizer import train_bpe

    other = tmp_path / "other-model"
    shutil.copytree(model_dir, other)
    for f in other.glob("tokenizer*"):
        f.unlink()
    train_bpe((d for dom in WORDS for d in synthetic_docs(dom, 20, seed=7)), 300, other)
    with pytest.raises(ConfigError) as err:
        check_model_dir(other, DataDir(synthetic_datadir))
    message = str(err.value)
    assert "--tokenizer" not in message and f"tokenizer: {{path: {other}}}" in message

    # follow the advice: a build config with 'tokenizer: {path: MODEL_DIR}'
    inputs = tmp_path / "corpus"
    inputs.mkdir()
    for dom in ("prose/a", "math/y"):
        rows = [json.dumps({"text": t}) for t in synthetic_docs(dom, 60)]
        (inputs / f"{dom.replace('/', '-')}.jsonl").write_text("\n".join(rows) + "\n")
    config = {"name": "rebuilt", "tokenizer": {"path": str(other)}, "min_sequence_tokens": 32,
              "fields": {"prose": {"role": "source", "inputs": [
                             {"path": str(inputs / "prose-a.jsonl"), "domain": {"constant": "a"}}]},
                         "math": {"role": "target", "inputs": [
                             {"path": str(inputs / "math-y.jsonl"), "domain": {"constant": "y"}}]}}}
    rebuilt = build_data_dir(config, tmp_path / "rebuilt")
    check_model_dir(other, DataDir(rebuilt))  # no mismatch any more


def test_no_tokenizer_advice_names_the_build_config_key(synthetic_datadir: Path, model_dir: Path,
                                                        tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    (bare / "tokenizer.json").unlink()
    with pytest.raises(MixagentError) as err:
        check_model_dir(bare, DataDir(synthetic_datadir))
    assert "--tokenizer" not in str(err.value) and "tokenizer: {path: DIR}" in str(err.value)


# -- 12: the summary's time counts every process of a resumed run --------------------------------
def test_resumed_summary_timing_accumulates_over_processes(
        synthetic_datadir: Path, model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = run_cpt(_config(synthetic_datadir, model_dir, out), callbacks=[stop_at(2)])
    saved = load_state(out / "checkpoint-2").timing
    assert 0 < saved["total_seconds"] <= first["timing"]["total_seconds"]
    assert saved["eval_seconds"] > 0 and saved["train_seconds"] > 0
    resumed = run_cpt(_config(synthetic_datadir, model_dir, out, resume=True))
    t = resumed["timing"]
    this = t["this_process"]
    assert t["resumed_from_step"] == 2
    for key in ("total_seconds", "train_seconds", "eval_seconds", "decision_seconds",
                "sampling_seconds"):
        assert t[key] == pytest.approx(saved[key] + this[key])
    assert t["total_seconds"] > this["total_seconds"]
    on_disk = json.loads((out / SUMMARY_NAME).read_text())
    assert on_disk["timing"]["total_seconds"] == t["total_seconds"]
