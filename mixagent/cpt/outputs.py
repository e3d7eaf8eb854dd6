"""The ``--out`` folder of a CPT run: refuse to clobber it, clear it on ``--overwrite``, and pick
the checkpoint to resume from.

A CPT run writes only the entries :data:`OUTPUT_NAMES` / :data:`OUTPUT_PATTERNS` describe, so
``--overwrite`` deletes exactly those and refuses a folder that holds anything else (the user's
own files are never deleted). Without ``--resume`` or ``--overwrite`` a folder that already holds a
run is refused, as ``collect``, ``data build`` and ``model pretrain`` do: a silent fresh start would
replace its checkpoints and final model.

A checkpoint is *complete* when it holds everything an exact resume reads (see
:func:`checkpoint_problem`). A kill while the Trainer saves leaves the newest one incomplete; resume
then falls back to the newest complete one and moves the broken folder aside
(``incomplete-checkpoint-N``), so the Trainer's checkpoint rotation cannot keep it in place of a
good one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

from mixagent.cpt.report import PLOT_NAME, SUMMARY_NAME
from mixagent.cpt.state import STATE_NAME, load_state
from mixagent.errors import ConfigError
from mixagent.policies.format import safetensors_problem

log = logging.getLogger(__name__)

#: folders and files a CPT run writes into --out (``runs``: TensorBoard's default log folder;
#: ``samples``: ``record_samples``)
OUTPUT_NAMES = frozenset({"final-model", SUMMARY_NAME, PLOT_NAME, "samples", "runs"})
OUTPUT_PATTERNS = (
    re.compile(r"checkpoint-\d+"),
    re.compile(r"incomplete-checkpoint-\d+(\.\d+)?"),
    re.compile(r"\.mixagent_cpt_summary\.json\..*\.tmp"),  # write_json_atomic's temporary file
    re.compile(r"\.mixagent-overwrite-\d+"),  # an --overwrite interrupted while deleting
)
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def is_run_output(name: str) -> bool:
    """Whether an entry of --out is something a CPT run writes."""
    return name in OUTPUT_NAMES or any(p.fullmatch(name) for p in OUTPUT_PATTERNS)


def _listing(paths: Sequence[Path], limit: int = 6) -> str:
    names = sorted(p.name for p in paths)
    more = f", … ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_out_dir(out: Path, *, resume: bool, overwrite: bool,
                  keep: Sequence[str | Path] = ()) -> list[Path]:
    """Check ``--out`` before anything is loaded; returns the entries ``--overwrite`` will delete.

    ``keep`` are the run's inputs (model, data, policy): an ``--overwrite`` that would delete one
    of them is refused, e.g. ``--model OUT/final-model`` to continue a finished run.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: --resume continues the "
                          "run in --out, --overwrite deletes it and starts over; pass one of them")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; choose another --out")
    if resume or not out.is_dir():
        return []
    entries = list(out.iterdir())
    if not entries:
        return []
    ours = [p for p in entries if is_run_output(p.name)]
    foreign = [p for p in entries if not is_run_output(p.name)]
    if not overwrite:
        if ours:
            raise ConfigError(
                f"--out {out} already holds a CPT run ({_listing(ours)}); starting over would replace "
                "its checkpoints, summary and final model. Pass --resume to continue it, --overwrite "
                "to delete it and start over, or choose a new --out")
        raise ConfigError(f"--out {out} is not empty and holds no CPT run ({_listing(foreign)}); "
                          "choose a new or empty --out folder")
    if foreign:
        raise ConfigError(
            f"--overwrite: --out {out} holds files a CPT run does not write ({_listing(foreign)}); "
            "refusing to delete in it. Move them away or choose another --out")
    targets = [p.resolve() for p in ours]
    for item in keep:
        path = Path(item).resolve()
        for t in targets:
            if path == t or t in path.parents:
                raise ConfigError(f"--overwrite would delete {t}, which this run reads ({item}); "
                                  "copy it out of --out first, or choose another --out")
    return ours


def clear_outputs(out: Path, entries: Sequence[Path]) -> None:
    """Delete a previous run's outputs (``check_out_dir``'s list): moved into one hidden folder
    first, so an interrupted delete leaves no half-deleted checkpoint that looks resumable."""
    if not entries:
        return
    trash = out / f".mixagent-overwrite-{os.getpid()}"
    trash.mkdir(exist_ok=True)
    for p in entries:
        if p.exists() or p.is_symlink():
            os.replace(p, trash / p.name)
    shutil.rmtree(trash)
    log.info("--overwrite: deleted the previous run's outputs in %s (%s)", out, _listing(entries))


def _torch_file_problem(path: Path) -> str | None:
    """``torch.save`` writes a zip archive; its central directory sits at the end, so reading it
    catches a truncated file without loading the tensors."""
    if not path.is_file():
        return "missing"
    try:
        with zipfile.ZipFile(path):
            return None
    except (zipfile.BadZipFile, OSError) as err:
        return f"truncated or corrupt ({err})"


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why ``ckpt`` cannot be resumed exactly, or None if it is complete.

    The Trainer writes weights, optimizer and scheduler, RNG states and ``trainer_state.json`` in
    that order and the mixture state comes last, so a kill while saving leaves a later file
    missing; a truncated file is a kill mid-write or a damaged copy. The Trainer itself would skip
    a missing optimizer or RNG state with at most a warning, which breaks exactness silently.
    """
    step = int(_CHECKPOINT.fullmatch(ckpt.name).group(1))  # type: ignore[union-attr]
    try:
        state = load_state(ckpt)
    except ConfigError:
        return (f"no readable {STATE_NAME} (the run was killed while saving it, or the checkpoint "
                "was not written by mixagent cpt)")
    if state.global_step != step:
        return f"its {STATE_NAME} is for step {state.global_step}, not {step}"
    try:
        json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no trainer_state.json"
    except (OSError, ValueError) as err:
        return f"trainer_state.json is unreadable ({err})"
    weights = ckpt / "model.safetensors"
    if weights.exists():
        problem = safetensors_problem(weights)
        if problem is not None:
            return f"model.safetensors is {problem}"
    elif (ckpt / "model.safetensors.index.json").is_file():
        try:
            index = json.loads((ckpt / "model.safetensors.index.json").read_text(encoding="utf-8"))
            shards = sorted(set(index["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as err:
            return f"model.safetensors.index.json is unreadable ({err})"
        for shard in shards:
            problem = safetensors_problem(ckpt / shard)
            if problem is not None:
                return f"{shard} is {problem}"
    elif (ckpt / "pytorch_model.bin").is_file():
        problem = _torch_file_problem(ckpt / "pytorch_model.bin")
        if problem is not None:
            return f"pytorch_model.bin is {problem}"
    else:
        return "no model weights (model.safetensors)"
    names = {p.name for p in ckpt.iterdir()}
    for f in ("optimizer.pt", "scheduler.pt"):
        if f in names:
            problem = _torch_file_problem(ckpt / f)
            if problem is not None:
                return f"{f} is {problem}"
        elif not any(n.startswith(f.split(".")[0]) or n.startswith("global_step") for n in names):
            return f"no {f}"  # (DeepSpeed and FSDP store it under other names)
    rng = [n for n in names if re.fullmatch(r"rng_state(_\d+)?\.pth", n)]
    if not rng:
        return "no rng_state.pth"
    for n in rng:
        problem = _torch_file_problem(ckpt / n)
        if problem is not None:
            return f"{n} is {problem}"
    return None


def find_resume_checkpoint(out: Path) -> tuple[Path, list[tuple[Path, str]]]:
    """The newest complete checkpoint in ``out`` and the newer incomplete ones it skips."""
    found = []
    if out.is_dir():
        for p in out.iterdir():
            m = _CHECKPOINT.fullmatch(p.name)
            if m and p.is_dir():
                found.append((int(m.group(1)), p))
    if not found:
        raise ConfigError(f"--resume: no checkpoint-N folder in {out}; run without --resume to start")
    skipped: list[tuple[Path, str]] = []
    for _, ckpt in sorted(found, reverse=True):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            for bad, why in skipped:
                log.warning("--resume: skipping %s, which is incomplete (%s); resuming from %s",
                            bad, why, ckpt)
            return ckpt, skipped
        skipped.append((ckpt, problem))
    detail = "; ".join(f"{p.name}: {why}" for p, why in skipped)
    raise ConfigError(
        f"--resume: no complete checkpoint in {out} ({detail}). Nothing can be resumed exactly: "
        f"delete {', '.join(p.name for p, _ in skipped)} and rerun without --resume to start over "
        "(or pass --overwrite instead of --resume)")


def set_aside(ckpt: Path) -> Path:
    """Rename an incomplete checkpoint out of the Trainer's ``checkpoint-*`` namespace (kept, not
    deleted: it may be worth inspecting)."""
    target = ckpt.with_name(f"incomplete-{ckpt.name}")
    n = 1
    while target.exists():
        target = ckpt.with_name(f"incomplete-{ckpt.name}.{n}")
        n += 1
    os.replace(ckpt, target)
    log.warning("--resume: moved the incomplete %s to %s", ckpt, target.name)
    return target
