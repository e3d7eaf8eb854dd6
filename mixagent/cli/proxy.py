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
    # the legend is printed below the table, not as its caption: rich centres a caption and
    # wraps it to the table's width, which breaks the sentence mid-line
    table = Table()
    for col in ["step", *fields, "source", "target", "balanced", "reward",
                *[f"{t} EM" for t in tasks], "train loss", "tokens", "seconds"]:
        table.add_column(col, justify="right", no_wrap=True)
    _, info = env.reset(seed=seed)
    table.add_row("base", *["" for _ in fields], "0", "0", "0", "",
                  *[f"{info['task_metrics'][t]['exact_match']:.3f}" for t in tasks], "", "0", "")
    total = 0.0
    terminated = False
    while not terminated:
        _, reward, terminated, _, info = env.step_weights(w)
        total += reward
        s = info["scores"]
        table.add_row(str(info["step"]), *[f"{field_share[f]:.3f}" for f in fields],
                      f"{s['source']:+.4f}", f"{s['target']:+.4f}", f"{s['balanced']:+.4f}",
                      f"{reward:+.4f}",
                      *[f"{info['task_metrics'][t]['exact_match']:.3f}" for t in tasks],
                      f"{info['train_loss']:.3f}", f"{info['tokens']:,}",
                      f"{info['wall_time']:.2f}")
    console.print(table)
    console.print("field columns: the weight share of each field; source/target/balanced: scores "
                  "vs. the base (higher is better)")
    console.print(f"return {total:+.4f} (final balanced score; aggregator "
                  f"{env.env_spec.reward.aggregator})")
