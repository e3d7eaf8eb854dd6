"""A 2-process ``torchrun`` CPT run on CPU (gloo): one schedule on every rank, disjoint batches."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from mixagent.cpt.dataset import make_sampler, replay
from mixagent.cpt.model import init_model_dir
from mixagent.data.manifest import DataDir

SEQ, BATCH, STEPS = 32, 2, 6


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def test_two_rank_torchrun_same_schedule_disjoint_batches(synthetic_datadir: Path,
                                                          tmp_path: Path) -> None:
    data = DataDir(synthetic_datadir)
    model = init_model_dir(data, tmp_path / "model", "micro", SEQ)
    out = tmp_path / "run"
    cfg = {"model": str(model), "data": str(synthetic_datadir), "out": str(out),
           "policy": "baseline:velocitune?eta=20", "max_steps": STEPS, "reweight_every": 2,
           "seq_len": SEQ, "per_device_batch_size": BATCH, "logging_steps": 1, "plot": False,
           "record_samples": True, "save_steps": 3, "eval": {"sequences_per_domain": 2, "batch_size": 16},
           "trainer_args": {"disable_tqdm": True, "dataloader_pin_memory": False}}
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "CUDA_VISIBLE_DEVICES": ""}
    cmd = [*_torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "mixagent.cpt", str(cfg_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((out / "samples" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 and r["global_step"] == STEPS for r in ranks)
    assert ranks[0]["schedule"] == ranks[1]["schedule"]
    assert len(ranks[0]["schedule"]) > 1  # the policy changed the weights during the run
    ids0, ids1 = ranks[0]["ids"], ranks[1]["ids"]
    assert len(ids0) == len(ids1) == STEPS * BATCH
    assert not set(ids0) & set(ids1)
    # rank k trains global batch 2t+k of the one stream the schedule defines
    sampler = make_sampler(data, SEQ, data.domain_names, seed=0)
    replay(sampler, [(s, w) for s, w in ranks[0]["schedule"]], 0)
    stream = sampler.next_flat_indices(STEPS * BATCH * 2).reshape(STEPS, 2, BATCH)
    assert np.array_equal(stream[:, 0].ravel(), ids0)
    assert np.array_equal(stream[:, 1].ravel(), ids1)
    summary = json.loads((out / "mixagent_cpt_summary.json").read_text())
    assert summary["samples_per_step"] == 2 * BATCH

    # resume both ranks from checkpoint-3 (as if killed after it): the same second half
    shutil.rmtree(out / f"checkpoint-{STEPS}")
    shutil.rmtree(out / "samples")
    cfg_path.write_text(json.dumps({**cfg, "resume": True}))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    again = [json.loads((out / "samples" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert again[0]["schedule"] == again[1]["schedule"] == ranks[0]["schedule"]
    half = STEPS // 2 * BATCH
    assert again[0]["ids"] == ids0[half:] and again[1]["ids"] == ids1[half:]
