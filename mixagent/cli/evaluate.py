"""``mixagent evaluate``: policies × scenarios × seeds into a report (see docs/EVALUATION.md)."""

from __future__ import annotations

from pathlib import Path

import typer


def evaluate_cmd(
    envs: list[str] | None = typer.Option(None, "--env", "-e", help="Env spec YAML (a scenario); repeat "
                                          "for several, e.g. --env envs/prose-to-math.yaml --env envs/prose-to-code.yaml."),
    policies: list[str] | None = typer.Option(
        None, "--policy", "-p", help="A policy to evaluate; repeat. policies/NAME or policy:DIR (learned), "
        "baseline:NAME[?k=v&...] (uniform, tokens, target_only, fixed_ratio, doremi, odm, velocitune; "
        "alignment and odm_benchmark need the env's observation.features), "
        "baseline:best_fixed_ratio (grid-searched per scenario on --tune-seeds), baseline:regmix "
        "(fitted per scenario on --regmix-runs random mixtures) or baseline:regmix?runs=N (on N; "
        "repeat for several budgets, e.g. 'baseline:regmix?runs=16' 'baseline:regmix?runs=64': the "
        "runs are shared)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Report folder, e.g. reports/NAME "
                                    "(report.md, report.json, plots/, episodes/). Rerunning with the same "
                                    "folder reuses finished episodes."),
    config: Path | None = typer.Option(None, "--config", help="YAML file with EvaluateConfig keys (envs, "
                                       "policies, out, seeds, ...); flags override it."),
    seeds: str | None = typer.Option(None, "--seeds", help="Evaluation env seeds, the same for every "
                                     "policy: 1000,1001,1002 or 1000-1004 (default 1000-1002)."),
    tune_seeds: str | None = typer.Option(None, "--tune-seeds", help="Seeds for tuning best_fixed_ratio "
                                          "and regmix, disjoint from --seeds (default 2000,2001)."),
    ratio_grid: str | None = typer.Option(None, "--ratio-grid", help="Source shares for best_fixed_ratio "
                                          "(default 0.2,0.3,...,0.8)."),
    regmix_runs: int | None = typer.Option(None, "--regmix-runs", help="Random static mixtures per "
                                           "scenario for regmix (default 24, at least 8)."),
    runs_to_match: bool | None = typer.Option(None, "--runs-to-match/--no-runs-to-match", help="Report, "
                                              "per scenario and learned policy, how many tuning runs RegMix "
                                              "(fits on 8, 16, 24, 32, 48, 64 runs, up to the largest "
                                              "budget) and the best fixed ratio need to match it; costs "
                                              "up to one episode per fit and evaluation seed (logged "
                                              "before they run)."),
    workers: int | None = typer.Option(None, "--workers", "-w", help="Parallel workers (Ray actors); 1 "
                                       "runs in this process without Ray (default 1)."),
    threads: int | None = typer.Option(None, "--threads", help="Torch threads per worker, in-process "
                                       "(--workers 1) too (default: $MIXAGENT_NUM_THREADS, else "
                                       "--cpus-per-worker, i.e. 1)."),
    cpus_per_worker: float | None = typer.Option(None, "--cpus-per-worker", help="Ray CPUs per worker."),
    gpus_per_worker: float | None = typer.Option(None, "--gpus-per-worker", help="Ray GPUs per worker."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (else RAY_ADDRESS, "
                                       "else a local instance)."),
    record_card: bool | None = typer.Option(None, "--record-card/--no-record-card", help="Write the "
                                            "results into each learned policy's config.json and README card."),
    plots: bool | None = typer.Option(None, "--plots/--no-plots", help="Write PNG plots (default on)."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help="Progress: by default "
                                         "a bar on a terminal, else (output to a log) a log line per "
                                         "finished episode; --progress forces the bar, --no-progress "
                                         "shows neither."),
) -> None:
    """Evaluate policies on scenarios over seeds: a report with 95% confidence intervals, win rates against every baseline, a transfer matrix and plots.

    Every policy runs on every scenario on the same env seeds; baselines that need tuning are tuned on separate seeds. Episodes run in parallel with Ray (--workers) and are cached under OUT/episodes, so an interrupted evaluation resumes where it stopped.
    """
    from rich.console import Console

    from mixagent.evaluation import evaluate, load_evaluate_config
    from mixagent.evaluation.config import parse_float_list, parse_int_list

    cfg = load_evaluate_config(config, {
        "envs": envs or None, "policies": policies or None, "out": str(out) if out else None,
        "seeds": parse_int_list(seeds, "--seeds"), "tune_seeds": parse_int_list(tune_seeds, "--tune-seeds"),
        "ratio_grid": parse_float_list(ratio_grid, "--ratio-grid"), "regmix_runs": regmix_runs,
        "runs_to_match": runs_to_match,
        "workers": workers, "threads_per_worker": threads, "cpus_per_worker": cpus_per_worker,
        "gpus_per_worker": gpus_per_worker, "address": address, "record_card": record_card,
        "plots": plots, "progress": progress})
    res = evaluate(cfg)
    console = Console()
    for st in res.report["transfer"]["statements"]:
        console.print(f"- {st}", markup=False)
    console.print(f"[bold]report:[/] {res.report_md} ({res.episodes_run} episodes run, "
                  f"{res.episodes_cached} from the cache, {res.wall_seconds:.1f} s)")
