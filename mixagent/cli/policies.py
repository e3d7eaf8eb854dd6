"""``mixagent train``, ``mixagent train-online`` and ``mixagent policy ...``: mixing policies."""

from __future__ import annotations

import json
from pathlib import Path

import typer

policy_app = typer.Typer(help="Inspect and evaluate mixing policies (policy directories and baselines).",
                         no_args_is_help=True)

OUT_HELP = "Policy directory to write (config.json + model.safetensors + README.md), e.g. policies/NAME."


def _threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


def _yaml_overrides(path: Path | None) -> dict:
    if path is None:
        return {}
    from mixagent.config import load_yaml
    from mixagent.errors import ConfigError

    if not path.is_file():
        raise ConfigError(f"--config: {path} does not exist")
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold a mapping of hyper-parameters")
    return data


def train(
    traj_dirs: list[Path] = typer.Argument(..., help="Trajectory directories written by 'mixagent collect'."),
    out: Path = typer.Option(..., "--out", "-o", help=OUT_HELP),
    algo: str = typer.Option("cql", "--algo", help="cql (BC warm start then CQL), bc (behaviour "
                             "cloning only) or regmix (fit RegMix's mixture regression)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the split, initialisation and sampling."),
    config: Path | None = typer.Option(None, "--config", help="YAML file of hyper-parameters "
                                       "(keys of OfflineConfig, e.g. cql_steps, network.hidden)."),
    bc_steps: int | None = typer.Option(None, "--bc-steps", help="Behaviour-cloning steps."),
    cql_steps: int | None = typer.Option(None, "--cql-steps", help="CQL steps."),
    action_scale: float | None = typer.Option(None, "--action-scale",
                                              help="The env's action.scale (default: from the data, else 3)."),
    floor: float | None = typer.Option(None, "--floor", help="Least weight per domain when acting "
                                       "(default: the env's action.floor, else 0)."),
    name: str | None = typer.Option(None, "--name", help="Name in the card (default: the folder name)."),
    threads: int = typer.Option(1, "--threads", help="torch threads for training."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help="Show progress bars (default: on a terminal; log lines otherwise)."),
) -> None:
    """Train a mixing policy offline on collected trajectories.

    cql: behaviour cloning on the best episodes (top quantile by return), then Conservative
    Q-Learning with twin critics, a validation split by episode and early stopping; checkpoints
    go to OUT/checkpoints/. The result acts on any number of domains.
    """
    from rich.console import Console

    from mixagent.config import validate_config
    from mixagent.errors import ConfigError
    from mixagent.policies.training.data import episode_mixtures, read_trajectories, transitions_from_rows
    from mixagent.policies.training.offline import OfflineConfig, train_offline

    _threads(threads)
    console = Console()
    if algo not in ("cql", "bc", "regmix"):
        raise ConfigError(f"--algo: {algo!r}; choose cql, bc or regmix")
    rows, meta = read_trajectories(traj_dirs)
    prov = {"name": name or out.name, "data": {"trajectories": [str(p) for p in traj_dirs],
                                               "transitions": len(rows), **meta}}
    if algo == "regmix":
        from mixagent.policies.regmix import fit_regmix

        spaces, mixtures, scores = episode_mixtures(rows)
        if len({s.names for s in spaces}) != 1:
            raise ConfigError("--algo regmix: the trajectories cover several domain spaces; fit one "
                              "space at a time")
        import numpy as np

        pol = fit_regmix(np.stack(mixtures), scores, spaces[0], seed=seed)
        pol.provenance = {**prov, **pol.provenance}
        pol.save(out)
        console.print(f"regmix: {len(scores)} episodes; source share {pol.params.source_share:.3f}; "
                      f"wrote {out}")
        return
    overrides = _yaml_overrides(config)
    overrides.update({"algo": algo, "seed": seed})
    for key, value in (("bc_steps", bc_steps), ("cql_steps", cql_steps)):
        if value is not None:
            overrides[key] = value
    overrides.setdefault("action_scale", action_scale or meta.get("action_scale") or 3.0)
    overrides.setdefault("floor", floor if floor is not None else meta.get("action_floor", 0.0))
    cfg = validate_config(OfflineConfig, overrides, "--config")
    data = transitions_from_rows(rows, cfg.features, cfg.action_scale, cfg.floor,
                                 space_name=meta.get("env_spec", ""))
    console.print(f"{len(data)} transitions from {len(data.episodes)} episodes over "
                  f"{len(data.spaces)} domain space(s) (K={data.mask.sum(1).max()})")
    out.mkdir(parents=True, exist_ok=True)
    res = train_offline(data, cfg, out, progress=progress, provenance=prov)
    res.agent.provenance.setdefault("compute", {})["training_seconds"] = round(res.seconds, 1)
    res.agent.save(out)
    (out / "history.json").write_text(json.dumps(res.history, indent=1) + "\n", encoding="utf-8")
    console.print(f"trained in {res.seconds:.0f} s; best {res.best}; wrote {out}")


def train_online_cmd(
    env_spec: Path = typer.Argument(..., help="An env spec YAML file, e.g. envs/micro.yaml."),
    out: Path = typer.Option(..., "--out", "-o", help=OUT_HELP),
    algo: str = typer.Option("ppo", "--algo", help="ppo or sac (stable-baselines3)."),
    workers: int = typer.Option(1, "--workers", "-w", help="Parallel envs: Ray actors when > 1, "
                                "in-process when 1."),
    timesteps: int = typer.Option(2000, "--timesteps", help="Env steps in total."),
    seed: int = typer.Option(0, "--seed"),
    config: Path | None = typer.Option(None, "--config", help="YAML of OnlineConfig keys."),
    threads: int = typer.Option(1, "--threads", help="torch threads of the learner."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help="Show SB3's progress bar (default: on a terminal)."),
) -> None:
    """Train a mixing policy online with stable-baselines3 over parallel proxy environments.

    The networks are the same per-domain equivariant ones offline training uses; the result is
    exported to the policy format (never SB3's pickled zip).
    """
    from rich.console import Console

    from mixagent.config import validate_config
    from mixagent.policies.training.online import OnlineConfig, train_online

    _threads(threads)
    overrides = _yaml_overrides(config)
    overrides.update({"algo": algo, "workers": workers, "timesteps": timesteps, "seed": seed})
    cfg = validate_config(OnlineConfig, overrides, "--config")
    res = train_online(env_spec, cfg, out, progress=progress)
    res.agent.provenance["name"] = out.name
    res.agent.save(out)
    Console().print(f"{cfg.algo}: {res.timesteps} env steps on {cfg.workers} worker(s) in "
                    f"{res.seconds:.0f} s; wrote {out}")


@policy_app.command("info")
def info(path: Path = typer.Argument(..., help="A policy directory.")) -> None:
    """Print what a policy is, what it was trained on, and its recorded scores."""
    from rich.console import Console

    from mixagent.policies.format import read_config, render_card

    cfg = read_config(path)
    from mixagent.policies.base import load_policy

    pol = load_policy(path)  # proves it loads (safetensors + json only)
    console = Console()
    console.print(f"[bold]{path}[/]: {pol.describe()} (loads: ok)")
    console.print(render_card(cfg), markup=False)


@policy_app.command("eval")
def evaluate(
    env_spec: Path = typer.Argument(..., help="An env spec YAML file."),
    policies: list[str] = typer.Argument(..., help="Policies: policy:DIR or baseline:NAME[?k=v&...]."),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Env reset seeds, the same for every policy."),
    best_ratio: str | None = typer.Option(None, "--best-ratio", help="Also grid-search the best "
                                          "fixed source ratio on these seeds (comma-separated), "
                                          "different from --seeds, and evaluate it."),
    ratio_grid: Path | None = typer.Option(None, "--ratio-grid", help="Reuse a ratio grid search: "
                                           "a JSON file written by --json (its 'ratio_grid') or "
                                           "by grid_search_ratio."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the results as JSON here."),
    card: Path | None = typer.Option(None, "--card", help="Record the results in this policy "
                                     "directory's config.json and card."),
) -> None:
    """Evaluate policies on an environment: final balanced score per seed, mean ± std."""
    from rich.console import Console
    from rich.table import Table

    from mixagent.envs.proxy_env import ProxyCPTEnv
    from mixagent.policies.evaluate import compare, record_in_card

    env = ProxyCPTEnv(env_spec)
    seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    ratio_seeds = [int(s) for s in best_ratio.split(",")] if best_ratio else None
    grid = None
    if ratio_grid is not None:
        grid = json.loads(ratio_grid.read_text(encoding="utf-8"))
        grid = grid.get("ratio_grid", grid)
    report = compare(env, policies, seed_list, ratio_seeds=ratio_seeds, grid=grid)
    table = Table(title=f"{env.env_spec.name}: final scores over seeds {seed_list}")
    for col in ("policy", "balanced", "source", "target"):
        table.add_column(col, justify="right")
    for row in report["rows"]:
        table.add_row(row["policy"], f"{row['balanced_mean']:+.5f} ± {row['balanced_std']:.5f}",
                      f"{row['source_mean']:+.5f}", f"{row['target_mean']:+.5f}")
    Console().print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if card is not None:
        record_in_card(card, report)
