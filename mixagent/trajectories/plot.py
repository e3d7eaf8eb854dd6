"""Plots of a trajectory collection (matplotlib, Agg backend, PNG): weights over time and the
source/target score curves of a few episodes' continued paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mixagent.trajectories.dataset import TrajectorySet


def plot_trajectories(ts: TrajectorySet, out: str | Path, *, episodes: int = 4,
                      title: str | None = None) -> Path:
    """Write a PNG: for each of the first ``episodes`` episodes, a stacked area of the applied
    domain weights over re-weighting steps (top row) and its source, target and balanced scores
    (bottom row). Branch alternatives are drawn as faint dots of their balanced score."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = Path(out)
    ids = ts.episodes[: max(1, episodes)]
    if not ids:
        raise ValueError("no trajectories to plot")
    names = ts.domain_names
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    fig, axes = plt.subplots(2, len(ids), figsize=(3.6 * len(ids) + 1.5, 6.2), squeeze=False,
                             sharey="row")
    for j, eps in enumerate(ids):
        ep = ts.episode(eps)
        main = ep.continuations().table
        t = main["t"].to_numpy() + 1
        w = np.asarray(main["weights"].to_pylist(), dtype=np.float64)
        ax = axes[0][j]
        ax.stackplot(np.concatenate([[0], t]), np.vstack([w[:1], w]).T,
                     colors=[cmap(i % cmap.N) for i in range(len(names))], step="pre")
        ax.set_title(f"{eps}\n{_short_explorer(main['explorer'][0].as_py())}", fontsize=8)
        ax.set_xlim(0, t.max())
        ax.set_ylim(0, 1)
        ax.set_xlabel("re-weighting step")
        ax = axes[1][j]
        for col, style in (("source_score", "-o"), ("target_score", "-s"), ("balanced_score", "-^")):
            y = np.concatenate([[0.0], main[col].to_numpy()])
            ax.plot(np.concatenate([[0], t]), y, style, ms=3, label=col.removesuffix("_score"))
        alt = ep.table
        alt_mask = ~alt["is_continuation"].to_numpy(zero_copy_only=False)
        if alt_mask.any():
            ax.plot(alt["t"].to_numpy()[alt_mask] + 1, alt["balanced_score"].to_numpy()[alt_mask],
                    ".", color="grey", alpha=0.4, ms=4, label="branches (balanced)")
        ax.axhline(0.0, color="black", lw=0.5)
        ax.set_xlabel("re-weighting step")
    axes[0][0].set_ylabel("domain weight")
    axes[1][0].set_ylabel("score (0 = base)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i % cmap.N)) for i in range(len(names))]
    fig.legend(handles, names, loc="upper right", fontsize=7, frameon=False)
    axes[1][-1].legend(fontsize=7, frameon=False)
    fig.suptitle(title or f"trajectories ({ts.num_episodes} episodes, {len(ts)} transitions)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _short_explorer(name: Any) -> str:
    text = str(name)
    return text if len(text) <= 40 else text[:37] + "..."
