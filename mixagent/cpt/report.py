"""The end-of-run outputs of ``mixagent cpt``: a JSON summary and a PNG of weights over time."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from mixagent.cpt.state import MixtureState

log = logging.getLogger(__name__)

SUMMARY_NAME = "mixagent_cpt_summary.json"
PLOT_NAME = "mixture_weights.png"


def weights_over_steps(state: MixtureState, max_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Step boundaries and the weights in force on each interval (from the schedule)."""
    spp = state.samples_per_step
    starts = [min(int(s) / spp, max_steps) for s, _ in state.schedule]
    w = np.array([wt for _, wt in state.schedule], dtype=np.float64)
    return np.array([*starts, max_steps], dtype=np.float64), w


def plot_weights(state: MixtureState, max_steps: int, path: Path, title: str) -> Path | None:
    """A stacked step plot of the weights in force at each optimizer step (from the schedule)."""
    if not state.schedule:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges, w = weights_over_steps(state, max_steps)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = np.repeat(edges, 2)[1:-1]
    y = np.repeat(w, 2, axis=0)
    ax.stackplot(x, y.T, labels=state.domains, step=None)
    ax.set_xlim(0, max_steps)
    ax.set_ylim(0, 1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("domain weight")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary(state: MixtureState, *, policy: str, max_steps: int, final: dict[str, Any] | None,
            timing: dict[str, float], notes: list[str], roles: list[str]) -> dict[str, Any]:
    """The JSON summary: final per-field scores, the weight schedule and every decision."""
    base = None
    if state.base_losses is not None:
        base = {"losses": dict(zip(state.domains, state.base_losses, strict=True)),
                "tasks": state.base_tasks}
    return {
        "policy": policy,
        "domains": state.domains,
        "roles": roles,
        "max_steps": max_steps,
        "samples_per_step": state.samples_per_step,
        "seq_len": state.seq_len,
        "final": final,
        "base": base,
        "schedule": [{"start_sample": int(s), "start_step": int(s) / state.samples_per_step,
                      "weights": dict(zip(state.domains, w, strict=True))} for s, w in state.schedule],
        "decisions": [{"step": d.step, "start_sample": d.start_sample, "weights": d.weights,
                       "scores": d.scores, "losses": d.losses, "tasks": d.tasks,
                       "decision_seconds": d.decision_seconds, "eval_seconds": d.eval_seconds}
                      for d in state.decisions],
        "timing": timing,
        "notes": notes,
    }
