"""Recording an evaluation in each learned policy's card (``--record-card``).

The results go into the policy's ``config.json`` as ``provenance.evaluation`` — an
:class:`~mixagent.policies.records.EvaluationRecord`, the one format of a recorded evaluation,
whose reader the card renderer and ``mixagent demo`` share — and its ``README.md`` is
re-rendered. Only those two files are rewritten (each atomically); the tensors are left
untouched, so the policy's id (and the episode cache) stay valid.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mixagent.evaluation.policies import PolicyEntry
from mixagent.policies.format import CARD_NAME, CONFIG_NAME, read_config, render_card
from mixagent.policies.records import BaselineComparison, EvaluationRecord, Interval, ScenarioEvaluation
from mixagent.utils.io import atomic_text_file, write_json_atomic

log = logging.getLogger(__name__)


def card_evaluation(report: dict[str, Any], entry: PolicyEntry, out: Path) -> EvaluationRecord:
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
            vs.append(BaselineComparison(baseline=r["policy"], baseline_balanced=r["balanced"]["mean"],
                                         diff=w["diff"]["mean"], diff_half_width=w["diff"]["half_width"],
                                         win_rate=w["win_rate"], verdict=w["verdict"]))
        cell = tr_rows.get(entry.label, {}).get("cells", {}).get(sc["key"], {})
        grid = report.get("tuning", {}).get(sc["key"], {}).get("best_fixed_ratio") or {}
        scen.append(ScenarioEvaluation(
            scenario=sc["key"], spec_hash=sc["spec_hash"],
            # what a CPT run (e.g. mixagent demo) needs to reproduce the tuned baseline
            best_fixed_ratio=grid.get("best"), in_distribution=bool(cell.get("in_distribution", False)),
            balanced=Interval(**mine["balanced"]), source=Interval(**mine["source"]),
            target=Interval(**mine["target"]), rank=mine["rank"], of=len(rows), vs=vs))
    setup = report["setup"]
    return EvaluationRecord(
        report=str(out / "report.md"), created_at=report["created_at"], seeds=setup["seeds"],
        tune_seeds=setup["tune_seeds"], scenarios=scen,
        description=(f"Final balanced score on {len(scen)} scenario(s) over env seeds {setup['seeds']} "
                     f"(the same for every policy), mean ± 95% Student-t interval over "
                     f"{len(setup['seeds'])} seeds; differences and win rates are paired by seed (a "
                     f"tie counts half). Tuned baselines were tuned on seeds {setup['tune_seeds']}. "
                     "Produced by mixagent evaluate."))


def record_cards(report: dict[str, Any], entries: Sequence[PolicyEntry], out: Path) -> list[Path]:
    """Write the evaluation into every learned policy's config.json and README.md card."""
    done = []
    for e in entries:
        if e.role != "learned" or e.path is None:
            continue
        config = read_config(e.path)
        config.setdefault("provenance", {})["evaluation"] = card_evaluation(report, e, out).model_dump(mode="json")
        write_json_atomic(e.path / CONFIG_NAME, config)
        with atomic_text_file(e.path / CARD_NAME) as f:
            f.write(render_card(config))
        log.info("recorded the evaluation in %s", e.path / CARD_NAME)
        done.append(e.path)
    return done
