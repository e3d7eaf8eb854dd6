"""Recording an evaluation in each learned policy's card (``--record-card``).

The results go into the policy's ``config.json`` as ``provenance.evaluation`` (its scores on
every scenario and against every baseline, the seeds, the report's path) and its ``README.md``
is re-rendered by :func:`mixagent.policies.format.render_card`. Only those two files are
rewritten (each atomically); the tensors are left untouched, so the policy's id — and the
episode cache — stay valid.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mixagent.evaluation.policies import PolicyEntry

log = logging.getLogger(__name__)

EVALUATION_FORMAT = "mixagent.evaluation/1"


def card_evaluation(report: dict[str, Any], entry: PolicyEntry, out: Path) -> dict[str, Any]:
    """The ``provenance.evaluation`` record of one learned policy from a report."""
    scen = []
    per = {(w["learned"], w["baseline"], w["scenario"]): w for w in report["win_rates"]["per_scenario"]}
    tr_rows = {r["policy"]: r for r in report["transfer"]["rows"]}
    for sc in report["setup"]["scenarios"]:
        rows = report["results"][sc["key"]]
        mine = next(r for r in rows if r["policy"] == entry.label)
        vs = []
        for r in rows:
            if r["role"] != "baseline":
                continue
            w = per[(entry.label, r["policy"], sc["key"])]
            vs.append({"baseline": r["policy"], "baseline_balanced": r["balanced"]["mean"],
                       "diff": w["diff"]["mean"], "diff_half_width": w["diff"]["half_width"],
                       "win_rate": w["win_rate"], "verdict": w["verdict"]})
        cell = tr_rows.get(entry.label, {}).get("cells", {}).get(sc["key"], {})
        tuned = report.get("tuning", {}).get(sc["key"], {})
        grid = tuned.get("best_fixed_ratio") or {}
        scen.append({"scenario": sc["key"], "spec_hash": sc["spec_hash"],
                     # what a CPT run (e.g. mixagent demo) needs to reproduce the tuned baseline
                     "best_fixed_ratio": grid.get("best"),
                     "in_distribution": bool(cell.get("in_distribution", False)),
                     "balanced": mine["balanced"], "source": mine["source"], "target": mine["target"],
                     "rank": mine["rank"], "of": len(rows), "vs": vs})
    n = len(report["setup"]["seeds"])
    return {"format": EVALUATION_FORMAT, "report": str(out / "report.md"),
            "created_at": report["created_at"], "seeds": report["setup"]["seeds"],
            "tune_seeds": report["setup"]["tune_seeds"], "scenarios": scen,
            "description": (f"Final balanced score on {len(scen)} scenario(s) over env seeds "
                            f"{report['setup']['seeds']} (the same for every policy), mean ± 95% "
                            f"Student-t interval over {n} seeds; differences and win rates are paired "
                            "by seed (a tie counts half). Tuned baselines were tuned on seeds "
                            f"{report['setup']['tune_seeds']}. Produced by mixagent evaluate.")}


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_cards(report: dict[str, Any], entries: Sequence[PolicyEntry], out: Path) -> list[Path]:
    """Write the evaluation into every learned policy's config.json and README.md card."""
    from mixagent.policies.base import CARD_NAME, CONFIG_NAME
    from mixagent.policies.format import read_config, render_card

    done = []
    for e in entries:
        if e.role != "learned" or e.path is None:
            continue
        config = read_config(e.path)
        config.setdefault("provenance", {})["evaluation"] = card_evaluation(report, e, out)
        _write_text_atomic(e.path / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
        _write_text_atomic(e.path / CARD_NAME, render_card(config))
        log.info("recorded the evaluation in %s", e.path / CARD_NAME)
        done.append(e.path)
    return done
