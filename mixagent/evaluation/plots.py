"""The report's PNG plots (matplotlib, Agg backend: no display needed).

Per scenario: domain weights over steps per policy (stacked areas, seed-averaged, each field a
colour family so source vs target share reads at a glance); source and target score curves;
a source-vs-target Pareto scatter of final scores (seed points and means, the Pareto front of
the means drawn); final balanced score per policy with 95% intervals. Across scenarios: the
transfer matrix as a heatmap when there are learned policies.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixagent.evaluation.analysis import curves
from mixagent.evaluation.policies import PolicyEntry
from mixagent.evaluation.scenarios import Scenario

FIELD_CMAPS = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def domain_colours(space: Any) -> list[Any]:
    """One colour per domain: source-role fields first, each field a colormap, shades within."""
    plt = _plt()
    fields: list[str] = []
    for f, _role in sorted(zip(space.fields, space.roles, strict=True), key=lambda fr: fr[1] != "source"):
        if f not in fields:
            fields.append(f)
    cmap_of = {f: plt.get_cmap(FIELD_CMAPS[i % len(FIELD_CMAPS)]) for i, f in enumerate(fields)}
    members = {f: [i for i, g in enumerate(space.fields) if g == f] for f in fields}
    colours: list[Any] = [None] * space.num_domains
    for f, idx in members.items():
        for j, i in enumerate(idx):
            colours[i] = cmap_of[f](0.35 + 0.55 * (j + 1) / (len(idx) + 1))
    return colours


def weights_plot(path: Path, records: dict, entries: Sequence[PolicyEntry], sc: Scenario,
                 seeds: Sequence[int]) -> Path:
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    n = len(entries)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharey=True)
    space = sc.space
    order = sorted(range(space.num_domains), key=lambda i: (space.roles[i] != "source", space.fields[i], i))
    colours = domain_colours(space)
    for k, e in enumerate(entries):
        ax = axes[k // cols][k % cols]
        c = curves(records, e, sc, seeds)
        w = c["weights"][:, order]
        steps = np.asarray(c["steps"])
        ax.stackplot(steps, w.T, colors=[colours[i] for i in order], linewidth=0.2, edgecolor="white")
        ax.set_title(e.label, fontsize=9)
        ax.set_xlim(steps.min(), steps.max() if steps.max() > steps.min() else steps.min() + 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if k % cols == 0:
            ax.set_ylabel("domain weight")
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    from matplotlib.patches import Patch

    handles, seen = [], set()
    for i in order:
        f = space.fields[i]
        if f not in seen:
            seen.add(f)
            handles.append(Patch(color=colours[i], label=f"{f} ({space.roles[i]})"))
    fig.suptitle(f"{sc.key}: weights over steps (mean over {len(seeds)} seeds)", fontsize=10)
    fig.tight_layout()
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 6),
               fontsize=8, frameon=False)
    return _save(fig, path)


def curves_plot(path: Path, records: dict, entries: Sequence[PolicyEntry], sc: Scenario,
                seeds: Sequence[int]) -> Path:
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for k, e in enumerate(entries):
        c = curves(records, e, sc, seeds)
        steps = np.asarray(c["steps"])
        for ax, m in zip(axes, ("source", "target"), strict=True):
            v = c[m]
            colour = f"C{k % 10}"
            ls = "-" if e.role == "learned" else "--"
            ax.plot(steps, v.mean(axis=0), ls, color=colour, label=e.label, lw=1.5)
            if v.shape[0] > 1:
                ax.fill_between(steps, v.min(axis=0), v.max(axis=0), color=colour, alpha=0.12)
    for ax, m in zip(axes, ("source", "target"), strict=True):
        ax.set_title(f"{m} score (mean; band: min-max over seeds)", fontsize=9)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.axhline(0, color="grey", lw=0.5)
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{sc.key}: source and target scores over steps", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def pareto_front(points: np.ndarray) -> list[int]:
    """Indices of points not dominated in (x, y) maximisation, sorted by x."""
    idx = []
    for i, p in enumerate(points):
        dominated = any((q >= p).all() and (q > p).any() for j, q in enumerate(points) if j != i)
        if not dominated:
            idx.append(i)
    return sorted(idx, key=lambda i: points[i][0])


def pareto_plot(path: Path, table: list[dict[str, Any]], sc: Scenario) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    means = np.array([[r["source"]["mean"], r["target"]["mean"]] for r in table])
    for k, r in enumerate(table):
        colour = f"C{k % 10}"
        ax.scatter(r["per_seed"]["source"], r["per_seed"]["target"], s=12, color=colour, alpha=0.35)
        ax.scatter([means[k, 0]], [means[k, 1]], s=70, color=colour,
                   marker="*" if r["role"] == "learned" else "o", edgecolor="black", lw=0.5,
                   label=r["policy"])
    front = pareto_front(means)
    ax.plot(means[front, 0], means[front, 1], color="black", lw=0.8, ls=":", label="Pareto front (means)")
    ax.set_xlabel("final source score (higher = less forgetting)")
    ax.set_ylabel("final target score (higher = more learned)")
    ax.set_title(f"{sc.key}: source vs target (small: seeds, big: mean)", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def balanced_plot(path: Path, table: list[dict[str, Any]], sc: Scenario) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(table) + 2), 3.8))
    x = np.arange(len(table))
    means = [r["balanced"]["mean"] for r in table]
    err = [r["balanced"]["half_width"] or 0.0 for r in table]
    colours = ["C3" if r["role"] == "learned" else "C0" for r in table]
    ax.bar(x, means, yerr=err, color=colours, capsize=4, alpha=0.85)
    ax.set_xticks(x, [r["policy"] for r in table], rotation=30, ha="right", fontsize=8)
    ax.axhline(0, color="grey", lw=0.5)
    n = table[0]["balanced"]["n"] if table else 0
    note = "95% t interval" if n > 1 else "one seed: no interval"
    ax.set_ylabel("final balanced score")
    ax.set_title(f"{sc.key}: balanced score (mean over {n} seeds; bars: {note}; red = learned)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def transfer_plot(path: Path, transfer: dict[str, Any]) -> Path:
    plt = _plt()
    scen = transfer["scenarios"]
    rows = transfer["rows"]
    m = np.array([[np.nan if r["cells"][s]["value"] is None else r["cells"][s]["value"] for s in scen]
                  for r in rows], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(1.6 * len(scen) + 3, 0.7 * len(rows) + 2))
    lim = np.nanmax(np.abs(m)) if np.isfinite(m).any() else 1.0
    im = ax.imshow(m, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for i, r in enumerate(rows):
        for j, s in enumerate(scen):
            cell = r["cells"][s]
            txt = "n/a" if cell["value"] is None else f"{cell['value']:+.4f}"
            if cell.get("in_distribution"):
                txt += "\n(trained)"
            dark = cell["value"] is not None and abs(cell["value"]) > 0.6 * lim
            ax.text(j, i, txt, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xticks(range(len(scen)), scen, rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{r['policy']}\n(trained on {', '.join(r['trained_on'])})" for r in rows],
                  fontsize=7)
    ax.set_xlabel("evaluated on")
    ax.set_title("balanced score minus the scenario's best baseline", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    plt = _plt()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def make_plots(out: Path, records: dict, entries: Sequence[PolicyEntry], scenarios: Sequence[Scenario],
               seeds: Sequence[int], tables: dict[str, list[dict[str, Any]]],
               transfer: dict[str, Any] | None) -> dict[str, Any]:
    """Write every plot under ``out/plots``; returns their paths relative to ``out``."""
    plots: dict[str, Any] = {"scenarios": {}}
    for sc in scenarios:
        base = out / "plots" / slug(sc.key)
        files = {
            "weights": weights_plot(base.with_name(f"{base.name}-weights.png"), records, entries, sc, seeds),
            "curves": curves_plot(base.with_name(f"{base.name}-curves.png"), records, entries, sc, seeds),
            "pareto": pareto_plot(base.with_name(f"{base.name}-pareto.png"), tables[sc.key], sc),
            "balanced": balanced_plot(base.with_name(f"{base.name}-balanced.png"), tables[sc.key], sc),
        }
        plots["scenarios"][sc.key] = {k: str(p.relative_to(out)) for k, p in files.items()}
    if transfer and transfer["rows"]:
        plots["transfer"] = str(transfer_plot(out / "plots" / "transfer.png", transfer).relative_to(out))
    return plots
