"""A learning curve from trained policies' own records (issue 13, item 2).

Each point is one offline training run on a share of the same trajectories (``data_fraction``)
that was selected on held-out scenarios of a scenario family (``selection:``); its card already
holds everything a curve needs — transitions used, the chosen candidate's mean final balanced
score on the held-out scenarios and uniform's score on the same scenarios and seeds. Reading the
cards instead of re-running anything keeps the curve exactly what selection measured, and costs
nothing. Points must share their held-out scenarios and seeds, or their scores do not compare.

The held-out score of a point is the best of its candidates (that is what selection does), so it
is biased upward by the choice; the transfer evaluation (``mixagent evaluate``) is the unbiased
number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mixagent.errors import ConfigError


def curve_point(policy_dir: Path) -> dict[str, Any]:
    """One point of the curve from a policy directory's ``config.json`` (JSON only)."""
    path = Path(policy_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{policy_dir}: no config.json; give policy directories written by "
                          "'mixagent train'")
    prov = json.loads(path.read_text(encoding="utf-8")).get("provenance") or {}
    sel = prov.get("selection") or {}
    best = sel.get("best") or {}
    if "heldout_score" not in best:
        raise ConfigError(f"{policy_dir}: not selected on held-out scenarios; train it with "
                          "'selection:' in --config (a learning curve compares held-out scores)")
    hp = prov.get("hyperparameters") or {}
    training = prov.get("training") or {}
    refs = {spec: float(r["score"]) for spec, r in (sel.get("references") or {}).items()}
    return {
        "policy": Path(policy_dir).name,
        "data_fraction": float(hp.get("data_fraction", 1.0)),
        "transitions": int(training.get("transitions", 0)),
        "episodes": int(training.get("episodes", 0)),
        "heldout_score": float(best["heldout_score"]),
        "chosen": {k: best[k] for k in ("phase", "step") if k in best},
        "references": refs,
        "versus": sel.get("best_versus_references") or {},
        "heldout": {"family": sel.get("family"), "scenario_seed": sel.get("scenario_seed"),
                    "seeds": sel.get("seeds"),
                    "scenarios": [s.get("id") for s in sel.get("scenarios") or []]},
    }


def learning_curve(policy_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """Points sorted by transitions; raises if they were selected on different held-out sets."""
    if not policy_dirs:
        raise ConfigError("learning curve: give at least one policy directory")
    points = sorted((curve_point(Path(p)) for p in policy_dirs), key=lambda p: p["transitions"])
    first = points[0]["heldout"]
    for p in points[1:]:
        if p["heldout"] != first:
            raise ConfigError(f"learning curve: {p['policy']} was selected on other held-out "
                              f"scenarios than {points[0]['policy']}; train every point with the "
                              "same selection settings and trajectories")
    return points


def write_learning_curve(points: list[dict[str, Any]], out: Path) -> list[Path]:
    """``curve.json``, ``curve.md`` and ``curve.png`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    refs = sorted({r for p in points for r in p["references"]})
    (out / "curve.json").write_text(json.dumps(points, indent=1) + "\n", encoding="utf-8")
    head = ["policy", "data share", "episodes", "transitions", "held-out score",
            *[f"{r}" for r in refs], *[f"vs {r} (won)" for r in refs], "chosen"]
    lines = ["# Learning curve", "",
             f"Held-out: {points[0]['heldout']['family']}, scenario seed "
             f"{points[0]['heldout']['scenario_seed']}, {len(points[0]['heldout']['scenarios'])} "
             f"scenarios x seeds {points[0]['heldout']['seeds']}. A point's score is its best "
             "candidate's (selection), so it is biased upward; the transfer evaluation is the "
             "unbiased test.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in points:
        vs = []
        for r in refs:
            v = p["versus"].get(r)
            vs.append(f"{v['mean_difference']:+.4f} ({v['scenarios_won']}/{v['scenarios']})"
                      if v else "")
        cells = [p["policy"], f"{p['data_fraction']:.2f}", str(p["episodes"]),
                 str(p["transitions"]), f"{p['heldout_score']:.4f}",
                 *[f"{p['references'][r]:.4f}" if r in p["references"] else "" for r in refs],
                 *vs, " ".join(f"{k} {v}" for k, v in p["chosen"].items())]
        lines.append("| " + " | ".join(cells) + " |")
    (out / "curve.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    from mixagent.evaluation.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [p["transitions"] for p in points]
    ax.plot(xs, [p["heldout_score"] for p in points], "o-", label="agent (selected)")
    for r in refs:
        ys = [p["references"].get(r) for p in points]
        ax.plot(xs, ys, "--", label=r)
    ax.set_xlabel("training transitions")
    ax.set_ylabel("mean final balanced score, held-out scenarios")
    ax.set_title("Learning curve")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=120)
    plt.close(fig)
    return [out / "curve.json", out / "curve.md", out / "curve.png"]
