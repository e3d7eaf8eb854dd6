"""``mixagent train``, ``mixagent train-online`` and ``mixagent policy info``: mixing policies.

Both training commands only turn options into a :class:`~mixagent.policies.training.TrainConfig`
for :func:`~mixagent.policies.training.train_policy`. Evaluation is ``mixagent evaluate`` (the
former ``mixagent policy eval`` is that command with ``--workers 1``)."""

from __future__ import annotations

from pathlib import Path

import typer

policy_app = typer.Typer(help="Inspect mixing policies (policy directories); evaluate them with "
                         "'mixagent evaluate'.",
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
    data_fraction: float | None = typer.Option(
        None, "--data-fraction", help="Train on this nested share of the training episodes (a "
        "learning-curve point, e.g. 0.25 beside the same --config at 1.0)."),
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
    from mixagent.policies.training import TrainConfig, train_policy

    _threads(threads)
    if algo not in ("cql", "bc", "regmix"):
        raise ConfigError(f"--algo: {algo!r}; choose cql, bc or regmix (ppo and sac: mixagent train-online)")
    hp = _yaml_overrides(config)
    hp["seed"] = seed
    for key, value in (("bc_steps", bc_steps), ("cql_steps", cql_steps), ("action_scale", action_scale),
                       ("floor", floor), ("data_fraction", data_fraction)):
        if value is not None:
            hp[key] = value
    cfg = validate_config(TrainConfig, {"algo": algo, "trajectories": [str(p) for p in traj_dirs],
                                        "name": name, "hyperparameters": hp}, "mixagent train")
    Console().print(train_policy(cfg, out, progress=progress).summary())


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
    from mixagent.policies.training import TrainConfig, train_policy

    _threads(threads)
    hp = _yaml_overrides(config)
    hp.update({"workers": workers, "timesteps": timesteps, "seed": seed})
    cfg = validate_config(TrainConfig, {"algo": algo, "env": str(env_spec), "hyperparameters": hp},
                          "mixagent train-online")
    Console().print(train_policy(cfg, out, progress=progress).summary())


@policy_app.command("info")
def info(path: Path = typer.Argument(..., help="A policy directory.")) -> None:
    """Print what a policy is, what it was trained on, and its recorded scores."""
    from rich.console import Console

    from mixagent.policies.format import read_config, render_card

    cfg = read_config(path)
    from mixagent.policies.protocol import load_policy

    pol = load_policy(path)  # proves it loads (safetensors + json only)
    console = Console()
    console.print(f"[bold]{path}[/]: {pol.describe()} (loads: ok)")
    console.print(render_card(cfg), markup=False)


@policy_app.command("curve")
def curve(
    paths: list[Path] = typer.Argument(..., help="Policy directories trained on shares of the same "
                                       "trajectories (data_fraction) with the same selection."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for curve.md, curve.json and "
                             "curve.png, e.g. reports/NAME/learning-curve."),
) -> None:
    """A learning curve: held-out family score (and uniform's) against training transitions,
    read from each policy's selection record (nothing is re-run).

    Example: mixagent policy curve policies/agent-25 policies/agent-50 policies/agent-100
    --out reports/agent/learning-curve
    """
    from mixagent.evaluation.learning_curve import learning_curve, write_learning_curve

    points = learning_curve(paths)
    for path in write_learning_curve(points, out):
        typer.echo(f"wrote {path}")
    typer.echo((out / "curve.md").read_text(encoding="utf-8"))
