"""``mixagent env pretrain|run``: an env spec's proxy base, and its environment by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

env_app = typer.Typer(help="Pre-train an env spec's proxy base, or run its environment by hand.",
                      no_args_is_help=True)

SPEC_HELP = "An env spec YAML file, e.g. envs/prose-to-math.yaml."


def _console() -> Any:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped: do not squeeze the table into 80 columns
        console = Console(width=160)
    return console


@env_app.command("pretrain")
def pretrain(
    env_spec: Path = typer.Argument(..., help=SPEC_HELP),
    force: bool = typer.Option(False, "--force", help="Pre-train again even if cached."),
) -> None:
    """Pre-train (or find in the cache) the base model of an env spec and print where it is.

    The base is the proxy pre-trained on the spec's source field; it is cached under
    $MIXAGENT_CACHE/bases/<hash> (a Hugging Face model directory) and shared by every spec with
    the same data, model, pre-training budget, context length and seed.
    """
    from mixagent.envs.setup import resolve_spec
    from mixagent.proxy.base_model import bases_dir, ensure_base

    resolved = resolve_spec(env_spec)
    recipe = resolved.base_recipe()
    cached = (bases_dir() / recipe.key / "model.safetensors").is_file() and not force
    base = ensure_base(recipe, resolved.spec.runtime, force=force)
    m = base.meta
    console = _console()
    console.print(f"base {m['key']} ({'cached' if cached else 'pre-trained now'}): {base.path}")
    console.print(f"  {m['parameters']:,} parameters, {m['tokens']:,} tokens on "
                  f"{len(m['domains'])} {resolved.spec.source_field} domains in {m['seconds']:.1f} s,"
                  f" final train loss {m['final_train_loss']:.3f}")


@env_app.command("run")
def run(
    env_spec: Path = typer.Argument(..., help=SPEC_HELP),
    weights: str = typer.Option(
        "uniform", "--weights", "-w",
        help="The fixed mixture: 'uniform', 'tokens' (proportional to training tokens), K "
             "comma-separated numbers in domain order, or field/domain=share pairs such as "
             "'prose=0.3,math=0.7' (a field's share is spread evenly over its domains; "
             "each key once). Shares that do not sum to 1 are rescaled, with a note."),
    seed: int = typer.Option(0, "--seed", help="Reset seed (sets the data order)."),
) -> None:
    """Run one episode with fixed weights and print a per-step table."""
    from rich.markup import escape
    from rich.table import Table

    from mixagent.envs.proxy_env import ProxyCPTEnv
    from mixagent.envs.weights import parse_weights_explained

    env = ProxyCPTEnv(env_spec)
    data = env.resolved.data
    w, notes = parse_weights_explained(weights, env.domain_names, env.resolved.field_of,
                                       lambda d: data.domain(d).train_tokens, where="--weights")
    fields = list(dict.fromkeys(env.resolved.field_of(d) for d in env.domain_names))
    field_share = {f: float(sum(w[i] for i, d in enumerate(env.domain_names)
                                if env.resolved.field_of(d) == f)) for f in fields}
    console = _console()
    for note in notes:  # the mixture run may differ from the one typed: say how
        console.print(f"[yellow]note:[/] --weights {escape(weights.strip())}: {escape(note)}")
    console.print(f"[bold]{env.env_spec.name or env_spec}[/]: {env.num_domains} domains, "
                  f"{env.num_steps} steps of {env.env_spec.cpt.tokens_per_step:,} tokens; weights "
                  + ", ".join(f"{f}={s:.3f}" for f, s in field_share.items()))
    tasks = [t.name for t in env.env_spec.eval.tasks]
    _, info = env.reset(seed=seed)
    # one column per benchmark: exact match for a qa benchmark, loss for a text benchmark
    shown = {t: ("exact_match", "EM") if "exact_match" in info["task_metrics"][t] else ("loss", "loss")
             for t in tasks}
    # the legend is printed below the table, not as its caption: rich centres a caption and
    # wraps it to the table's width, which breaks the sentence mid-line
    table = Table()
    for col in ["step", *fields, "source", "target", "balanced", "reward",
                *[f"{t} {shown[t][1]}" for t in tasks], "train loss", "tokens", "seconds"]:
        table.add_column(col, justify="right", no_wrap=True)
    table.add_row("base", *["" for _ in fields], "0", "0", "0", "",
                  *[f"{info['task_metrics'][t][shown[t][0]]:.3f}" for t in tasks], "", "0", "")
    total = 0.0
    terminated = False
    while not terminated:
        _, reward, terminated, _, info = env.step_weights(w)
        total += reward
        s = info["scores"]
        table.add_row(str(info["step"]), *[f"{field_share[f]:.3f}" for f in fields],
                      f"{s['source']:+.4f}", f"{s['target']:+.4f}", f"{s['balanced']:+.4f}",
                      f"{reward:+.4f}",
                      *[f"{info['task_metrics'][t][shown[t][0]]:.3f}" for t in tasks],
                      f"{info['train_loss']:.3f}", f"{info['tokens']:,}",
                      f"{info['wall_time']:.2f}")
    console.print(table)
    console.print("field columns: the weight share of each field; source/target/balanced: scores "
                  "vs. the base (higher is better)")
    console.print(f"return {total:+.4f} (final balanced score; aggregator "
                  f"{env.env_spec.reward.aggregator})")


def _candidates(given: list[str]) -> dict[str, str] | None:
    """``--candidate 'NAME: MIXTURE'`` values as a name -> mixture dict (each name once)."""
    out: dict[str, str] = {}
    for g in given:
        name, sep, text = g.partition(":")
        if not sep or not name.strip() or not text.strip():
            raise typer.BadParameter(f"{g!r}: write 'NAME: MIXTURE', e.g. 'word-problems: prose=0.7,"
                                     "math/algebra-problems=0.3'", param_hint="--candidate")
        if name.strip() in out:
            raise typer.BadParameter(f"candidate {name.strip()!r} given twice", param_hint="--candidate")
        out[name.strip()] = text.strip()
    return out or None


@env_app.command("headroom")
def headroom(
    env_spec: Path = typer.Argument(..., help=SPEC_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="JSON file to write, e.g. reports/headroom/NAME.json "
                             "(a Markdown summary NAME.md goes beside it; episodes are cached in NAME/)."),
    seeds: str | None = typer.Option(None, "--seeds", help="Evaluation seeds for uniform and the "
                                     "re-evaluation of the best mixture and schedule: 1000-1004 (default) "
                                     "or 1000,1001,... (at least 2)."),
    tune_seeds: str | None = typer.Option(None, "--tune-seeds", help="Seeds of the search, disjoint from "
                                          "--seeds (default 2000,2001)."),
    runs: int | None = typer.Option(None, "--runs", help="Random static mixtures of the RegMix search "
                                    "(default 32, at least 8)."),
    candidate: list[str] | None = typer.Option(None, "--candidate", help="A named hypothesis run beside "
                                               "the search's picks, 'NAME: MIXTURE' with MIXTURE as in "
                                               "'env run --weights', e.g. 'word-problems: prose=0.7,"
                                               "math/algebra-problems=0.3'; repeat for several."),
    shares: str | None = typer.Option(None, "--schedule-shares", help="Source shares the dynamic "
                                      "schedules move between (default 0.2,0.5,0.8)."),
    workers: int | None = typer.Option(None, "--workers", "-w", help="Parallel workers (Ray actors); 1 "
                                       "runs in this process without Ray (default 1)."),
    threads: int | None = typer.Option(None, "--threads", help="Torch threads per worker (default: "
                                       "$MIXAGENT_NUM_THREADS, else --cpus-per-worker, i.e. 1)."),
    cpus_per_worker: float | None = typer.Option(None, "--cpus-per-worker", help="Ray CPUs per worker."),
    gpus_per_worker: float | None = typer.Option(None, "--gpus-per-worker", help="Ray GPUs per worker."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (else RAY_ADDRESS, "
                                       "else a local instance)."),
    cache: Path | None = typer.Option(None, "--cache", help="Episode cache folder (default: --out without "
                                      "its suffix); a 'mixagent evaluate' report folder shares its episodes."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help="By default a bar on a "
                                         "terminal, else a log line per finished episode."),
) -> None:
    """Measure a scenario's headroom before any agent: how far the best mixture a search finds beats uniform, in seed standard deviations.

    Uniform on --seeds; a RegMix search over --runs random per-domain mixtures on --tune-seeds; the best mixture re-evaluated on --seeds; the best of a family of two-phase and ramp source-share schedules likewise. Episodes run on Ray workers (--workers) and are cached, so an interrupted run resumes. See docs/ENV.md, "Headroom".
    """
    from mixagent.config import validate_config
    from mixagent.evaluation.config import parse_float_list, parse_int_list
    from mixagent.evaluation.headroom import HeadroomConfig, measure_headroom

    given = {"env": str(env_spec), "out": str(out), "seeds": parse_int_list(seeds, "--seeds"),
             "tune_seeds": parse_int_list(tune_seeds, "--tune-seeds"), "runs": runs,
             "candidates": _candidates(candidate or []),
             "schedule_shares": parse_float_list(shares, "--schedule-shares"), "workers": workers,
             "threads_per_worker": threads, "cpus_per_worker": cpus_per_worker,
             "gpus_per_worker": gpus_per_worker, "address": address,
             "cache": str(cache) if cache else None, "progress": progress}
    cfg = validate_config(HeadroomConfig, {k: v for k, v in given.items() if v is not None}, "env headroom")
    res = measure_headroom(cfg)
    rep = res.report
    console = _console()
    u, b, d = rep["uniform"], rep["best"], rep["dynamic"]

    def sd(v: float | None) -> str:
        return "n/a (uniform has no seed spread)" if v is None else f"{v:+.2f} sd"

    console.print(f"uniform {u['mean']:+.5f} (sd {u['sd']:.5f}, {len(u['per_seed'])} seeds)", markup=False)
    console.print(f"best static {b['mean']:+.5f} (sd {b['sd']:.5f}): headroom {sd(rep['headroom_sd'])}; "
                  f"source share {b['source_share']:.3f}, top "
                  + ", ".join(f"{t['domain']}={t['weight']:.3f}" for t in b["top_domains"][:3]), markup=False)
    console.print(f"best schedule {d['name']} {d['mean']:+.5f} (sd {d['sd']:.5f}): headroom "
                  f"{sd(rep['dynamic_headroom_sd'])}", markup=False)
    console.print(f"written: {res.out} and {res.summary} ({res.episodes_run} episodes run, "
                  f"{res.episodes_cached} from the cache)", markup=False)
