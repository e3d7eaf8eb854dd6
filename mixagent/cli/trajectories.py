"""``mixagent collect`` and ``mixagent trajectories info|compare|plot|export``: trajectory collections."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Inspect and plot collected trajectory sets (folders written by 'mixagent "
                  "collect').", no_args_is_help=True)

_COLLECT_HELP = (
    "Collect data-mixing trajectories from proxy CPT episodes, in parallel with Ray.\n\n"
    "Each episode runs the env spec's proxy CPT under mixtures chosen by an explorer and is saved "
    "as one Parquet shard (atomically) under OUT/shards/, with a dataset card (card.json, "
    "README.md). Episode i's seeds derive from (--seed, i) only, so --resume after a crash or kill "
    "collects exactly the missing episodes and reproduces an uninterrupted run row for row.\n\n"
    "ENV_SPEC may also be a scenario family (a YAML with a top-level 'family:' key, e.g. "
    "envs/family-v1.yaml): each episode then runs the scenario sampled from (--seed, episode), "
    "recorded in the rows' 'scenario' column and in the card; all its scenarios share one base.\n\n"
    "Explorers: random_walk[:concentration=50,jump=0.1,min_alpha=0.05,start=uniform] (Dirichlet "
    "random walk on the simplex, as in the Data Mixing Agent paper), uniform[:alpha=1], "
    "mixture[:source=0.2-0.9,subset=0.5,concentration=1,schedule=any,steps=env] (one plan per "
    "episode: a source share ~ U(LO, HI), static or scheduled (two_phase, ramp; any: one of the "
    "three), times Dirichlet(concentration) weights on a random subset of each field's domains, "
    "each kept with probability subset), baseline:NAME[?key=value&...], policy:DIR. Repeat "
    "--explorer to mix them per episode, with "
    "shares as SPEC@SHARE.\n\n"
    "Example: mixagent collect envs/micro.yaml --out trajectories/micro-rw --episodes 64 "
    "--workers 2 --branch 4"
)


def collect(
    env_spec: Path = typer.Argument(..., help="The env spec (YAML), e.g. envs/micro.yaml, or a "
                                    "scenario family, e.g. envs/family-v1.yaml."),
    out: Path = typer.Option(..., "--out", "-o", help="Collection folder, e.g. trajectories/NAME."),
    episodes: int = typer.Option(..., "--episodes", "-n", min=1,
                                 help="Collect episodes 0..N-1 (with --resume: the missing ones)."),
    workers: int = typer.Option(1, "--workers", "-w", min=1,
                                help="Parallel workers: 1 runs in this process without Ray; more "
                                "start one Ray actor each (each owns one environment)."),
    explorer: list[str] = typer.Option(["random_walk"], "--explorer", "-e",
                                       help="Explorer spec (repeatable: SPEC@SHARE mixes them per "
                                       "episode)."),
    explorer_order: str = typer.Option("draw", "--explorer-order",
                                       help="draw: each episode draws an explorer by share; cycle: "
                                       "episode i uses the (i mod n)-th --explorer (with a family's "
                                       "repeats = n, every scenario runs each explorer once)."),
    branch: int = typer.Option(1, "--branch", "-k", min=1, max=64,
                               help="Try K actions from a snapshot at every step (K transitions per "
                               "step), then continue from one of them."),
    branch_select: str = typer.Option("explorer", "--branch-select",
                                      help="Branch to continue from: explorer (branch 0, the "
                                      "explorer's own action), best (highest reward) or random."),
    branch_alternatives: str = typer.Option("auto", "--branch-alternatives",
                                            help="Branches 1..K-1: explorer (more proposals), "
                                            "perturb (Dirichlet around branch 0) or auto."),
    branch_batched: str = typer.Option("auto", "--branch-batched",
                                       help="auto: train the K branches as one batched computation "
                                       "when the model allows (verified per worker); off: one "
                                       "after another."),
    seed: int = typer.Option(0, "--seed", min=0, help="Collection seed."),
    resume: bool = typer.Option(False, "--resume",
                                help="Continue a collection in OUT: skip episodes with a valid "
                                "shard, remove unfinished writes, quarantine bad shards."),
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", min=0.01,
                                          help="Ray CPUs per actor; also its torch threads."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0.0,
                                          help="Ray GPUs per actor (the proxy uses CUDA when "
                                          "the spec's runtime.device allows)."),
    threads_per_worker: int | None = typer.Option(None, "--threads-per-worker", min=1,
                                                  help="torch threads per worker (default: its "
                                                  "CPU share; in-process: as configured)."),
    address: str | None = typer.Option(None, "--address",
                                       help="Ray cluster to join (default: $RAY_ADDRESS, else a "
                                       "private local instance)."),
    max_attempts: int = typer.Option(3, "--max-attempts", min=1,
                                     help="Tries per episode when its worker dies."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress",
                                         help="Progress bar (default: on a terminal)."),
    population: int = typer.Option(1, "--population", min=1,
                                   help="Train P episodes as one batched model per worker "
                                   "(population batching; not with --branch)."),
    env_cache: int = typer.Option(4, "--env-cache", min=1,
                                  help="Scenario family: environments each worker keeps, so "
                                  "episodes of a scenario it has seen reuse its environment."),
) -> None:
    """Collect trajectories (see the command help)."""
    from rich.console import Console

    from mixagent.config import validate_config
    from mixagent.policies.policy_explorers import make_explorer
    from mixagent.trajectories.collection import CollectConfig
    from mixagent.trajectories.collection import collect as run_collect

    cfg = validate_config(CollectConfig, {
        "env_spec": str(env_spec), "out": str(out), "episodes": episodes, "workers": workers,
        "explorers": list(explorer), "explorer_order": explorer_order,
        "branch": {"k": branch, "select": branch_select, "alternatives": branch_alternatives,
                   "batched": branch_batched},
        "seed": seed, "resume": resume, "cpus_per_worker": cpus_per_worker,
        "gpus_per_worker": gpus_per_worker, "threads_per_worker": threads_per_worker,
        "address": address, "max_attempts": max_attempts, "progress": progress,
        "env_cache": env_cache, "population": population,
    }, "mixagent collect")
    r = run_collect(cfg, explorer_factory=make_explorer)  # policy:/baseline: explorers too
    console = Console()
    console.print(f"[bold]{r.out}[/bold]: collected {len(r.collected)} episode(s), "
                  f"{r.transitions} transitions in {r.wall_seconds:.1f} s "
                  f"({r.transitions_per_second:.2f} transitions/s after {r.setup_seconds:.1f} s "
                  f"setup); {len(r.skipped)} already present; {r.retries} retried")
    for path, reason in r.quarantined:
        console.print(f"[yellow]quarantined[/yellow] {path}: {reason}")
    console.print(f"summary: mixagent trajectories info {r.out}")


collect.__doc__ = _COLLECT_HELP


@app.command("info")
def info(
    folder: Path = typer.Argument(..., help="A collection folder written by 'mixagent collect'."),
) -> None:
    """Summarise a collection: spec, counts, returns, compute, bad or quarantined shards."""
    import warnings

    from rich.console import Console
    from rich.table import Table

    from mixagent.trajectories.dataset import load
    from mixagent.trajectories.storage import QUARANTINE_DIR, read_card, read_collection

    coll = read_collection(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = load(folder, skip_bad=True)
    card = read_card(folder)
    console = Console()
    ident = coll["identity"]
    t = Table(title=f"trajectories {folder}", show_header=False)
    what = "scenario family" if coll.get("scenario_family") else "env spec"
    t.add_row(what, f"{coll.get('env_spec_name', '')} (hash {coll['env_spec_hash']})")
    if coll.get("scenario_family"):
        t.add_row("scenarios", f"{len(card.get('scenarios', {}))} collected (one per episode; "
                  "see the 'scenario' column and card.json)")
    t.add_row("collection", f"id {coll['collection_id']}, config hash {coll['config_hash']}, "
              f"seed {ident['seed']}")
    t.add_row("explorers", ", ".join(ident["explorers"]))
    t.add_row("branching", ", ".join(f"{k}={v}" for k, v in ident["branch"].items()))
    if not coll.get("scenario_family"):  # a family's domains differ by scenario
        t.add_row("domains", ", ".join(ts.domain_names or coll.get("domain_names", [])))
    cont = ts.continuations()
    t.add_row("episodes", str(ts.num_episodes))
    t.add_row("transitions", f"{len(ts)} ({len(cont)} on continued paths, "
              f"{len(ts) - len(cont)} branch alternatives)")
    if len(cont):
        import numpy as np

        ret = cont.to_pandas().groupby("episode")["rewards"].sum().to_numpy()
        final = cont.filter(cont.table["terminateds"]).to_pandas()
        t.add_row("return", f"mean {ret.mean():.4g}, std {ret.std():.3g}, min {ret.min():.4g}, "
                  f"max {ret.max():.4g}")
        t.add_row("final scores", f"source {final['source_score'].mean():.4g}, target "
                  f"{final['target_score'].mean():.4g}, balanced "
                  f"{final['balanced_score'].mean():.4g} (means)")
        wall = float(np.sum(ts.table["wall_time"].to_numpy()))
        t.add_row("compute", f"{wall:.1f} s in transitions; "
                  f"{card.get('compute', {}).get('cpu_seconds', 0):.1f} allocated CPU-seconds "
                  f"over {len(card.get('compute', {}).get('runs', []))} run(s)")
        batched = int(np.sum(ts.table["batched"].to_numpy(zero_copy_only=False)))
        if batched:
            t.add_row("batched branches", f"{batched} transitions")
    console.print(t)
    for b in ts.skipped:
        console.print(f"[red]bad shard[/red] {b}")
    qdir = Path(folder) / QUARANTINE_DIR
    if qdir.is_dir():
        for p in sorted(qdir.glob("*")):
            if not p.name.endswith(".reason.txt"):
                console.print(f"[yellow]quarantined[/yellow] {p}")


@app.command("compare")
def compare(
    folder: Path = typer.Argument(..., help="A collection folder written by 'mixagent collect'."),
    baseline: str | None = typer.Option(None, "--baseline", "-b",
                                        help="The explorer every other one is compared with "
                                        "(default: the collection's first --explorer)."),
    pair_by: str = typer.Option("seed", "--pair-by",
                                help="seed: pair episodes on the same scenario and env seed "
                                "(a family with 'repeat_seeds: shared': the mixing's difference "
                                "alone); scenario: on the same scenario, each explorer's mean "
                                "over its episodes there."),
    by: str | None = typer.Option(None, "--by",
                                  help="Also compare within each value of a scenario choice "
                                  "recorded in the card, e.g. target_field, lr, num_steps, "
                                  "reward.aggregator."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the rows to this JSON file."),
) -> None:
    """Which explorer mixes best: each explorer's final balanced score against a baseline's,
    paired by scenario (and env seed), with the mean difference's 95% interval and wins."""
    import json

    from rich.console import Console
    from rich.table import Table

    from mixagent.errors import MixagentError
    from mixagent.evaluation.explorer_pairs import compare_explorers, episode_finals
    from mixagent.trajectories.storage import read_collection

    if pair_by not in ("seed", "scenario"):
        raise typer.BadParameter(f"--pair-by: 'seed' or 'scenario', not {pair_by!r}")
    coll = read_collection(folder)
    base = baseline or coll["identity"]["explorers"][0].rsplit("@", 1)[0]
    finals, choices = episode_finals(folder)
    try:
        rows = compare_explorers(finals, base, pair_by=pair_by, by=by, choices=choices)  # type: ignore[arg-type]
    except MixagentError as err:
        raise typer.BadParameter(str(err)) from None
    t = Table(title=f"{folder}: explorers against {base} (final balanced score, paired by {pair_by})")
    for col in ("explorer", by or "group", "units", "mean", "baseline", "difference (95% CI)", "won", "verdict"):
        t.add_column(col, justify="left" if col in ("explorer", by or "group", "verdict") else "right")
    for r in rows:
        t.add_row(r.explorer, r.group, str(r.units), f"{r.mean:+.4f}", f"{r.baseline_mean:+.4f}",
                  r.paired.diff.format(4), f"{r.paired.wins + 0.5 * r.paired.ties:g}/{r.units}", r.verdict)
    Console(width=200).print(t)
    if json_out is not None:
        payload = {"collection": str(folder), "baseline": base, "pair_by": pair_by, "by": by,
                   "episodes": len(finals), "rows": [r.as_dict() for r in rows]}
        json_out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


@app.command("plot")
def plot(
    folder: Path = typer.Argument(..., help="A collection folder written by 'mixagent collect'."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="PNG to write (default: FOLDER/trajectories.png)."),
    episodes: int = typer.Option(4, "--episodes", "-n", min=1, help="Episodes to draw."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip bad shards (with a warning)."),
) -> None:
    """Plot weights over time and source/target score curves of a few episodes (PNG)."""
    from mixagent.trajectories.dataset import load
    from mixagent.trajectories.plot import plot_trajectories

    ts = load(folder, skip_bad=skip_bad)
    path = plot_trajectories(ts, out or Path(folder) / "trajectories.png", episodes=episodes,
                             title=f"{Path(folder).name}: {ts.num_episodes} episodes")
    typer.echo(f"wrote {path}")


@app.command("export")
def export(
    folder: Path = typer.Argument(..., help="A collection folder written by 'mixagent collect'."),
    out: Path = typer.Option(..., "--out", "-o", help="Minari datasets root to create (load it with "
                             "MINARI_DATASETS_PATH=OUT)."),
    fmt: str = typer.Option("minari", "--format", "-f", help="Export format (only 'minari')."),
    dataset_id: str | None = typer.Option(None, "--dataset-id",
                                          help="Minari id, namespace/name-vN (default: "
                                          "mixagent/<collection name>-v0)."),
    scenario: str | None = typer.Option(None, "--scenario",
                                        help="Scenario family: export only this scenario's "
                                        "episodes (needed when scenarios differ in domain count)."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace a previous export at OUT (once the new one is "
                                   "complete)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip bad shards (with a warning)."),
) -> None:
    """Export a collection as a Minari dataset (arrow backend) for offline-RL libraries.

    Each episode's continued path becomes one Minari episode (flattened observations, the
    env's Box spaces); branch alternatives stay in the Parquet shards only. Needs the optional
    extra: pip install -e '.[minari]'.
    """
    if fmt != "minari":
        raise typer.BadParameter(f"unknown format {fmt!r}; supported: minari", param_hint="--format")
    from mixagent.trajectories.export import export_minari

    r = export_minari(folder, out, dataset_id=dataset_id, scenario=scenario, overwrite=overwrite,
                      skip_bad=skip_bad)
    typer.echo(f"wrote Minari dataset {r.dataset_id} ({len(r.episodes)} episodes, {r.transitions} "
               f"transitions; observation {r.observation_size}, {r.num_domains} domains) to {r.path}")
    if r.alternatives_left_out:
        typer.echo(f"left out {r.alternatives_left_out} branch-alternative transitions (not on an "
                   "episode's continued path; they stay in the Parquet shards)")
    typer.echo(f"load it: MINARI_DATASETS_PATH={r.out} python -c \"import minari; "
               f"print(minari.load_dataset('{r.dataset_id}'))\"")
