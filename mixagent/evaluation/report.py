"""Writing the report folder: ``report.json`` (everything), ``report.md`` (for people), ``plots/``.

``report.md`` is rendered from the report dict alone (every number in it is in report.json), with
sections: setup, per-scenario results (with each policy's field shares, and each learned policy's
paired difference and win rate against every baseline), tuned baselines, runs to match (with
``runs_to_match``), win rates, transfer (matrix and verdict lines against the best baseline), plots. A learned policy that does not beat a baseline is reported as not beating it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mixagent.evaluation.policies import PolicyEntry
from mixagent.evaluation.scenarios import Scenario
from mixagent.utils.io import atomic_text_file, write_json_atomic


def write_report(out: Path, report: dict[str, Any], records: dict, entries: Sequence[PolicyEntry],
                 scenarios: Sequence[Scenario], *, plots: bool = True) -> None:
    if plots:
        from mixagent.evaluation.plots import make_plots

        report["plots"] = make_plots(out, records, entries, scenarios, report["setup"]["seeds"],
                                     report["results"], report["transfer"])
    else:
        report["plots"] = {}
    write_json_atomic(out / "report.json", report, indent=1)
    with atomic_text_file(out / "report.md") as f:
        f.write(render_markdown(report))


def _ci(s: dict[str, Any], digits: int = 5) -> str:
    if s["half_width"] is None:
        return f"{s['mean']:+.{digits}f} (n=1, no CI)"
    return f"{s['mean']:+.{digits}f} ± {s['half_width']:.{digits}f}"


def _share(f: dict[str, Any] | None) -> str:
    return "n/a" if not f else f"{f['source']:.2f} : {f['target']:.2f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _diff_sig(r: dict[str, Any]) -> str:
    sig = {True: "significant", False: "not significant", None: "one seed, no interval"}[r["significant"]]
    return f"{_ci(r['diff'])} ({sig})"


def _runs_to_match_md(rtm: dict[str, Any]) -> list[str]:
    lines = ["## Runs to match", "",
             "How many tuning runs each tuned baseline needs to match each learned policy: *matches* = "
             "the tuned baseline's mean final balanced score on the evaluation seeds is at least the "
             "policy's. RegMix is fitted on the first *n* of its random runs for each *n* of the ladder "
             "(same mixtures, seeds, regressor and fit seed as the RegMix rows) and each fit evaluated; "
             "*runs to match* is the smallest such *n* (`> N`: none of the ladder up to N). A run is one "
             "tuning episode; the best fixed ratio's are its grid shares × tuning seeds. The evaluation-seed "
             "episodes are not counted as tuning. *diff* is policy − tuned baseline, paired by seed, at "
             "the matching budget (else the largest); *significant*: its 95% interval excludes 0.", ""]
    if rtm["reference"] is None:
        return [*lines, "No learned policy and no zero-tuning baseline was evaluated: nothing to compare.", ""]
    if not rtm["reference"].startswith("learned"):
        lines += ["**No learned policy was evaluated**: each scenario's best zero-tuning baseline (highest "
                  "balanced mean among the untuned baselines) is compared instead.", ""]
    lines += ["| scenario | policy (balanced mean) | tuned baseline | runs to match | tuning episodes | diff |",
              "|---|---|---|---|---|---|"]
    for r in rtm["rows"]:
        lines.append(f"| {r['scenario']} | {r['policy']} ({r['policy_balanced']:+.5f}) | {r['baseline']} | "
                     f"{r['text']} | {r['tuning_episodes']} | {_diff_sig(r)} |")
    lines.append("")
    for key, points in rtm["ladder"].items():
        lines += [f"RegMix ladder on {key} (balanced on the evaluation seeds):", "",
                  "| runs (tuning episodes) | chosen source share | balanced | evaluated as |",
                  "|---|---|---|---|"]
        for pt in points:
            lines.append(f"| {pt['runs']} | {pt['source_share']:.3f} | {_ci(pt['balanced'])} | "
                         f"{pt['evaluated_as'] or 'ladder only'} |")
        lines.append("")
    c = rtm["cost"]
    if c["ladder_fits"]:
        lines += [f"Cost: {c['ladder_fits']} RegMix fits on prefixes of the runs already made (no extra tuning "
                  f"episodes); their evaluation added {c['evaluation_episodes_added']} episode(s) to the "
                  "evaluation (fits that coincide with an evaluated budget reuse its episodes).", ""]
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    setup = report["setup"]
    comp = setup["compute"]
    seeds = setup["seeds"]
    n = len(seeds)
    ci_note = ("± is the 95% Student-t confidence interval over seeds (t_{0.975, n-1} · s / √n)"
               if n > 1 else "one seed: no confidence interval can be given")
    m = setup["machine"]
    lines = ["# Evaluation report", "",
             f"Generated by `mixagent evaluate` at {report['created_at']} (format `{report['format']}`). "
             "Every number here is in `report.json`.", "",
             "## Setup", "",
             "| scenario | domains | source | target | spec hash | env spec |", "|---|---|---|---|---|---|"]
    for sc in setup["scenarios"]:
        lines.append(f"| {sc['key']} | {sc['num_domains']} | {sc['num_source']} | {sc['num_target']} | "
                     f"`{sc['spec_hash'][:12]}` | `{sc['path']}` |")
    tuned = sorted({p["label"] for p in report["policies"] if p.get("tuned")})
    tuning_line = ([f"- tuning seeds ({', '.join(tuned)}; disjoint from the evaluation seeds): "
                    f"{setup['tune_seeds']}"] if tuned else [])
    applied = comp.get("threads_applied")
    threads = (f" × {'/'.join(str(t) for t in applied)} torch thread(s) each" if applied else
               f" × {comp['threads_per_worker']} torch thread(s) each (set; no worker ran now)"
               if comp.get("threads_per_worker") else "")
    lines += ["",
              "- policies: " + ", ".join(f"{p['label']} ({p['role']})" for p in report["policies"]),
              f"- evaluation seeds (env reset seeds, the same for every policy): {seeds}",
              *tuning_line,
              f"- workers: {setup['workers']}{threads}; compute: {comp['wall_seconds']:.1f} s wall-clock, "
              f"{comp['episode_seconds']:.1f} s in episodes, {comp['episodes_total']} episodes "
              f"({comp['episodes_run']} run now, {comp['episodes_cached']} from the cache)"
              + (f", {comp['worker_cpu_seconds']:.1f} worker CPU-seconds" if comp["worker_cpu_seconds"] else ""),
              f"- machine: {m['host']}, {m['processor']}, {m['cpus']} CPUs"
              + (f", GPU {m['cuda']}" if m.get("cuda") else ", no GPU") + f", Python {m['python']}",
              f"- scores: final balanced / source / target score of each episode; {ci_note}; rank 1 = "
              "best balanced mean", ""]
    lines += ["## Results per scenario", "",
              "*share* is the source : target split of the weights a policy set (each field's total "
              "weight, mean over steps and seeds). `uniform` is uniform over **domains**, not fields: "
              "its source share is the scenario's fraction of source domains.", ""]
    scenarios = {sc["key"]: sc for sc in setup["scenarios"]}
    per_pair = {}
    for w in report["win_rates"]["per_scenario"]:
        per_pair.setdefault(w["scenario"], []).append(w)
    for key, rows in report["results"].items():
        lines += [f"### {key}", "", "| rank | policy | role | balanced | source | target | share (source : target) |",
                  "|---|---|---|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: r["rank"]):
            name = r["policy"] if r["policy"] == r["describe"] or not r["describe"] else \
                f"{r['policy']} — `{r['describe']}`"
            lines.append(f"| {r['rank']} | {name} | {r['role']} | {_ci(r['balanced'])} | "
                         f"{_ci(r['source'])} | {_ci(r['target'])} | {_share(r.get('field_shares'))} |")
        lines.append("")
        sc = scenarios.get(key)
        if sc and any(r["describe"] == "uniform" for r in rows):
            lines += [f"`uniform` here: 1/{sc['num_domains']} per domain, so source share "
                      f"{sc['num_source']}/{sc['num_domains']} = {sc['num_source'] / sc['num_domains']:.2f}.",
                      ""]
        pairs = per_pair.get(key, [])
        if pairs:
            lines += ["Each learned policy against every baseline (final balanced score, learned − "
                      "baseline, paired by seed):", "",
                      "| learned | baseline | difference | win rate | verdict |", "|---|---|---|---|---|"]
            for w in pairs:
                lines.append(f"| {w['learned']} | {w['baseline']} | {_ci(w['diff'])} | "
                             f"{_pct(w['win_rate'])} ({w['wins']}W {w['ties']}T {w['losses']}L) | "
                             f"{w['verdict']} |")
            lines.append("")
    if report["tuning"]:
        lines += ["## Tuned baselines", "",
                  "Tuned per scenario on the tuning seeds only, then evaluated on the evaluation seeds.", ""]
        for key, kinds in report["tuning"].items():
            if "best_fixed_ratio" in kinds:
                g = kinds["best_fixed_ratio"]
                grid = ", ".join(f"{r['source']:g}: {r['balanced_mean']:+.5f}" for r in g["rows"])
                lines.append(f"- {key}, best fixed ratio: source share **{g['best']:g}** (grid, mean "
                             f"balanced over seeds {g['seeds']}: {grid})")
            for kind, rg in kinds.items():
                if kind != "regmix" and not kind.startswith("regmix-"):
                    continue
                fit = rg.get("fit", {})
                name = "RegMix" if kind == "regmix" else f"RegMix-{kind.removeprefix('regmix-')}"
                lines.append(f"- {key}, {name}: fitted on {len(rg['runs'])} random static mixtures; chosen "
                             f"source share **{rg['source_share']:.3f}** (predicted balanced "
                             f"{fit.get('predicted_best', float('nan')):+.5f}, best observed "
                             f"{fit.get('best_observed', float('nan')):+.5f})")
        lines.append("")
    if "runs_to_match" in report:
        lines += _runs_to_match_md(report["runs_to_match"])
    wr = report["win_rates"]
    lines += ["## Win rates", ""]
    if not wr["overall"]:
        lines += ["No learned policy, or no baseline, was evaluated: nothing to compare.", ""]
    else:
        lines += [f"Rule: {wr['rule']}.", ""]
        scen = list(report["results"])
        lines += ["| learned | baseline | " + " | ".join(scen) + " | overall |",
                  "|---|---|" + "---|" * (len(scen) + 1)]
        per = {(w["learned"], w["baseline"], w["scenario"]): w for w in wr["per_scenario"]}
        for o in wr["overall"]:
            cells = []
            for s in scen:
                w = per[(o["learned"], o["baseline"], s)]
                cells.append(f"{_pct(w['win_rate'])} ({w['wins']}W {w['ties']}T {w['losses']}L)")
            lines.append(f"| {o['learned']} | {o['baseline']} | " + " | ".join(cells) +
                         f" | {_pct(o['win_rate'])} |")
        lines.append("")
        for o in wr["overall_vs_all_baselines"]:
            lines.append(f"- {o['learned']}: win rate {_pct(o['win_rate'])} over {o['n']} paired comparisons "
                         "(every baseline, every scenario, every seed)")
        lines.append("")
    tr = report["transfer"]
    lines += ["## Transfer", ""]
    if not tr["rows"]:
        lines += ["No learned policy was evaluated.", ""]
    else:
        lines += [f"Value: {tr['value']}. Rows: learned policy (trained-on scenario); columns: evaluated "
                  "scenario; *(trained)* marks a scenario the policy was trained on.", "",
                  "| policy (trained on) | " + " | ".join(tr["scenarios"]) + " |",
                  "|---|" + "---|" * len(tr["scenarios"])]
        for r in tr["rows"]:
            cells = []
            for s in tr["scenarios"]:
                c = r["cells"][s]
                if c["value"] is None:
                    cells.append("n/a (no baseline)")
                    continue
                txt = _ci(c["diff"]) + f" vs {c['best_baseline']}"
                cells.append(txt + (" *(trained)*" if c["in_distribution"] else ""))
            lines.append(f"| {r['policy']} ({', '.join(r['trained_on'])}) | " + " | ".join(cells) + " |")
        lines += ["", "Verdicts (\"beats\" = mean paired difference > 0 and its 95% interval excludes 0):", ""]
        lines += [f"- {s}" for s in tr["statements"]] or ["- none (no baseline evaluated)"]
        lines.append("")
    plots = report.get("plots") or {}
    if plots:
        lines += ["## Plots", ""]
        for key, files in plots.get("scenarios", {}).items():
            lines += [f"### {key}", ""]
            for what, title in (("weights", "Domain weights over steps (stacked, seed mean)"),
                                ("curves", "Source and target scores over steps"),
                                ("pareto", "Source vs target, final scores"),
                                ("balanced", "Final balanced score, 95% CI")):
                lines += [f"**{title}**", "", f"![{key} {what}]({files[what]})", ""]
        if plots.get("transfer"):
            lines += ["### Transfer matrix", "", f"![transfer matrix]({plots['transfer']})", ""]
    return "\n".join(lines)
