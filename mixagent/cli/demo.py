"""``mixagent demo``: the whole workflow on the built-in corpus, offline, in minutes on a CPU.

The work is in :mod:`mixagent.demo`; this module turns options into a :class:`DemoConfig`
(a ``--config`` YAML first, then the options given on the command line) and prints the phases,
the comparison table and where the outputs are.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def demo_cmd(
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Run the whole pipeline first at a "
                                      "small size: collect trajectories on envs/demo-tiny.yaml, train an "
                                      "agent offline (BC + CQL), evaluate it against uniform, then the "
                                      "three CPT runs with that fresh agent."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default: demo-output in the "
                                    "current directory). A previous demo's output there is replaced."),
    policy: Path | None = typer.Option(None, "--policy", help="Agent directory to drive the CPT run "
                                       "(default: the shipped policies/mixagent-agent-v2.1)."),
    workers: int | None = typer.Option(None, "--workers", "-w", help="Ray workers for collection with "
                                       "--from-scratch (1: in-process, no Ray)."),
    seed: int | None = typer.Option(None, "--seed", help="Seeds the base model, the data order, the "
                                    "policies and the collection."),
    threads: int | None = typer.Option(None, "--threads", help="torch threads (default 1; on a quiet "
                                       "machine with free cores, 2 can be faster)."),
    config: Path | None = typer.Option(None, "--config", help="A YAML DemoConfig (keys of mixagent.demo."
                                       "DemoConfig, e.g. base.size, cpt.max_steps); options override it."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help="Progress bars "
                                         "(default: on a terminal)."),
) -> None:
    """Compare the learned agent with uniform and the best fixed ratio on a real CPT run.

    Offline on a fresh machine: builds (or reuses) the built-in corpus and a base model (a Llama
    pre-trained on the prose field, cached), then continually pre-trains it towards math through
    the production transformers.Trainer path three times — mixed by the agent, by uniform weights
    and by the best fixed source ratio recorded in the agent's card — and prints a table of
    final balanced / source / target scores. Writes demo_summary.json, demo_comparison.png and one
    folder per run (summary JSON + weights PNG) into --out. About 5 minutes on 2 CPU cores the
    first time, about 2 once the corpus and base model are cached.
    """
    from rich.console import Console
    from rich.table import Table

    from mixagent.config import load_yaml_config, validate_config
    from mixagent.demo import DemoConfig, run_demo

    cfg = load_yaml_config(DemoConfig, config) if config is not None else DemoConfig()
    overrides = {"out": str(out) if out else None, "policy": str(policy) if policy else None,
                 "workers": workers, "seed": seed, "threads": threads, "progress": progress,
                 "from_scratch": True if from_scratch else None}
    data = cfg.model_dump()
    data.update({k: v for k, v in overrides.items() if v is not None})
    cfg = validate_config(DemoConfig, data, "mixagent demo")
    console = Console()
    console.print(f"[bold]mixagent demo[/]{' --from-scratch' if cfg.from_scratch else ''}: output in {cfg.out}")
    cpt_log = logging.getLogger("mixagent.cpt")
    level = cpt_log.level
    if logging.getLogger().level > logging.DEBUG:  # one line per decision is too much here
        cpt_log.setLevel(logging.WARNING)
    try:
        result = run_demo(cfg, report=lambda line: console.print(line, markup=False, highlight=False))
    finally:
        cpt_log.setLevel(level)

    from rich import box

    table = Table(title="CPT of the base model: final scores vs. the base (higher is better)",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for col in ("run", "balanced", "source", "target", "src loss", "tgt loss", "math EM", "src w"):
        table.add_column(col, justify="left" if col == "run" else "right", no_wrap=True)
    for r in result.rows:
        table.add_row(r["run"], _fmt(r["balanced"], "+.4f") + (" ★" if r["best"] else "  "),
                      _fmt(r["source"], "+.4f"), _fmt(r["target"], "+.4f"), _fmt(r["source_loss"], ".3f"),
                      _fmt(r["target_loss"], ".3f"), _fmt(r["math_exact_match"], ".3f"),
                      _fmt(r["final_source_share"], ".2f"))
    console.print(table)
    for r in result.rows:
        console.print(f"  {r['run']}: {r['policy']}", markup=False, highlight=False)
    console.print(f"★ best balanced score: {result.best}. Scores are relative gains over the base "
                  "(source: retention, target: learning); src/tgt loss: mean held-out loss per field; "
                  "src w: the source field's weight at the end.", highlight=False)
    if not result.ratio["tuned"]:
        console.print(f"[yellow]note:[/] the fixed-ratio run uses {result.ratio['label']} — "
                      f"{result.ratio['where']}.")
    console.print(f"summary: {result.summary_path}")
    if result.plot_path is not None:
        console.print(f"plot:    {result.plot_path}  (weights over steps + source/target score curves)")
    for p in result.run_plots:
        console.print(f"         {p}")
    console.print(f"done in {result.seconds:.0f} s")
