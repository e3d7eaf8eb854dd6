"""``mixagent demo``: the whole product in one command, offline, on a CPU.

The demo builds (or reuses) the built-in corpus and a base model pre-trained on its source field
(cached by content hash, so a second demo skips both), then continually pre-trains that base
through the production path (:func:`mixagent.cpt.run.run_cpt`: a stock ``transformers.Trainer``
with the policy-driven sampler) three times — mixed by the learned agent, by uniform weights and
by the best fixed source:target ratio — and writes a comparison (JSON + table rows) and one PNG.
With ``from_scratch`` it first runs the rest of the pipeline at a small size: collect
trajectories on a tiny proxy env, train an agent offline (BC + CQL), evaluate it against uniform
(and grid-search the best fixed ratio on the proxy), and the CPT runs use that fresh agent.

The base model is larger than the proxies the agent was trained on (``small`` Llama, ~1.4M
parameters with the small corpus' 4k vocabulary, vs. the 0.37M proxy every scenario of
``envs/family-v2.yaml`` uses): the runs show the policy transferring to a bigger model. The shipped
agent was trained on that benchmark-scored family, so the runs are scored by its base's benchmarks
(the prose cloze and the math word problems) and observe them as it did.
Library code logs; the CLI (``mixagent/cli/demo.py``) prints through ``report``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from mixagent.config import StrictModel
from mixagent.cpt.report import PLOT_NAME as RUN_PLOT_NAME
from mixagent.cpt.report import SUMMARY_NAME as RUN_SUMMARY_NAME
from mixagent.envs.spec import RewardSpec
from mixagent.errors import ConfigError
from mixagent.policies.format import CONFIG_NAME, MODEL_NAME, read_config
from mixagent.policies.records import ScenarioRecord, evaluation_record, scenario_record
from mixagent.utils.io import write_json_atomic
from mixagent.utils.progress import Progress

log = logging.getLogger(__name__)

DEMO_FORMAT = "mixagent.demo/1"
SUMMARY_NAME = "demo_summary.json"
PLOT_NAME = "demo_comparison.png"
SHIPPED_POLICY = "policies/mixagent-agent-v2.1"
FROM_SCRATCH_ENV = "envs/demo-tiny.yaml"
#: the source share used when the policy's card records no ratio grid for the scenario. 0.5 is
#: the neutral middle of the grid, not a tuned value; the demo says so wherever it shows it.
DEFAULT_RATIO = 0.5
RUN_NAMES = ("agent", "uniform", "best-ratio")


# -- config --------------------------------------------------------------------------------------
class BaseModelSpec(StrictModel):
    """The base model the CPT runs start from: a Llama pre-trained on the source field."""

    size: Literal["micro", "small", "medium", "large"] = "small"
    tokens: int = Field(default=327_680, gt=0, description="pre-training tokens (160 steps of 16x128)")
    seq_len: int = Field(default=128, gt=1)
    batch_size: int = Field(default=16, gt=0)
    lr: float = Field(default=3e-3, gt=0)


class DemoCPTSpec(StrictModel):
    """One CPT run of the comparison (the three runs share everything but the policy)."""

    max_steps: int = Field(default=120, gt=0)
    reweight_every: int = Field(default=20, gt=0)
    batch_size: int = Field(default=8, gt=0)
    seq_len: int = Field(default=128, gt=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    warmup_steps: int = Field(default=10, ge=0)
    eval_sequences: int = Field(default=4, gt=0, description="held-out sequences per domain per decision")
    tasks: list[str] = Field(default_factory=lambda: ["math_exact_match"],
                             description="task sets scored at each decision (dropped if the data lacks them)")
    task_examples: int = Field(default=32, gt=0)


class FromScratchSpec(StrictModel):
    """The small pipeline of ``--from-scratch``: collect -> train -> evaluate on a proxy env."""

    env: str = Field(default=FROM_SCRATCH_ENV, description="env spec YAML (repo-relative or a path)")
    episodes: int = Field(default=32, gt=0)
    explorers: list[str] = Field(default_factory=lambda: ["random_walk"])
    bc_steps: int = Field(default=150, ge=0)
    cql_steps: int = Field(default=150, ge=0, description="early stopping keeps the best validated step")
    batch_size: int = Field(default=32, gt=0)
    cql_states: int = Field(default=16, gt=0, description="states per batch for the conservative term")
    eval_seeds: list[int] = Field(default_factory=lambda: [1000, 1001, 1002])
    ratio_seeds: list[int] = Field(default_factory=lambda: [2000],
                                   description="seeds of the fixed-ratio grid search (not eval_seeds)")
    ratios: list[float] = Field(default_factory=lambda: [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0])


class DemoConfig(StrictModel):
    """Everything ``mixagent demo`` does, in one typed config (YAML via ``--config``)."""

    out: str = "demo-output"
    seed: int = Field(default=0, ge=0)
    threads: int = Field(default=1, gt=0, description="torch threads (1 is fastest on a shared 2-core box)")
    progress: bool | None = Field(default=None, description="progress bars (default: on a terminal)")
    corpus: Literal["tiny", "small", "full"] = "small"
    data: str | None = Field(default=None, description="a data directory instead of the built-in corpus")
    source_field: str = "prose"
    target_field: str = "math"
    policy: str | None = Field(default=None, description=f"agent directory (default {SHIPPED_POLICY})")
    scenario: str | None = Field(default=None, description="env spec whose reward/observation replace "
                                 "the ones the agent's config records (provenance.scenario)")
    best_ratio: float | None = Field(default=None, ge=0, le=1,
                                     description="source share of the fixed-ratio run (default: the card's)")
    base: BaseModelSpec = Field(default_factory=BaseModelSpec)
    cpt: DemoCPTSpec = Field(default_factory=DemoCPTSpec)
    from_scratch: bool = False
    scratch: FromScratchSpec = Field(default_factory=FromScratchSpec)
    workers: int = Field(default=1, ge=1, description="Ray workers for collection (1: in-process)")


# -- results -------------------------------------------------------------------------------------
@dataclass
class DemoResult:
    """What the demo did: one row per CPT run, the files, and the time of every phase."""

    out: Path
    rows: list[dict[str, Any]]
    best: str
    ratio: dict[str, Any]
    phases: list[dict[str, Any]] = field(default_factory=list)
    summary_path: Path | None = None
    plot_path: Path | None = None
    run_plots: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    scratch: dict[str, Any] | None = None


Report = Callable[[str], None]


class _Phases:
    """Phase lines with elapsed time ("[2/5] base model: done in 12.3 s (total 50.1 s)")."""

    def __init__(self, total: int, report: Report):
        self.total, self.report, self.i = total, report, 0
        self.t0 = time.perf_counter()
        self.done: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[dict[str, Any]]:
        self.i += 1
        info: dict[str, Any] = {"phase": name}
        self.report(f"[{self.i}/{self.total}] {name} ...")
        t = time.perf_counter()
        yield info
        info["seconds"] = round(time.perf_counter() - t, 1)
        self.done.append(info)
        note = f" ({info['note']})" if info.get("note") else ""
        self.report(f"[{self.i}/{self.total}] {name}: done in {info['seconds']:.1f} s{note} "
                    f"(total {time.perf_counter() - self.t0:.1f} s)")


# -- locating shipped files ----------------------------------------------------------------------
def shipped_path(rel: str) -> Path:
    """A shipped artifact (``envs/…``, ``policies/…``): from the cwd, else beside the package."""
    p = Path(rel).expanduser()
    if p.is_absolute() or p.exists():
        return p
    import mixagent

    beside = Path(mixagent.__file__).resolve().parent.parent / rel
    return beside if beside.exists() else p


def _policy_config(policy_dir: Path) -> dict[str, Any]:
    try:
        return read_config(policy_dir)
    except ConfigError as err:
        raise ConfigError(f"{err}; pass --policy DIR with a trained agent, or use --from-scratch") from None


def _find_policy(cfg: DemoConfig) -> Path:
    path = shipped_path(cfg.policy or SHIPPED_POLICY)
    if not (path / CONFIG_NAME).is_file() or not (path / MODEL_NAME).is_file():
        what = "the shipped agent" if cfg.policy is None else "the agent"
        raise ConfigError(f"{what} was not found at {path} (needs {CONFIG_NAME} + {MODEL_NAME}); "
                          "pass --policy DIR with a trained agent, or use --from-scratch to train one")
    return path


def _family_base(policy_config: dict[str, Any]) -> str | None:
    """The base scenario of the family a family agent was selected on (``provenance.selection.
    family_origin``), or None. A family agent is evaluated on named scenarios, never on its
    collection's name, so the base -- the scenario the family varies -- is where a ratio grid
    tuned on the demo's kind of run is recorded."""
    origin = ((policy_config.get("provenance") or {}).get("selection") or {}).get("family_origin")
    path = shipped_path(origin) if isinstance(origin, str) else None
    if path is None or not path.is_file():
        return None
    from mixagent.envs.family import load_family_base

    family, base = load_family_base(path)
    return base.name or (Path(family.base).stem if isinstance(family.base, str) else None)


def _ratio(cfg: DemoConfig, policy_dir: Path, policy_config: dict[str, Any], scenario: str) -> dict[str, Any]:
    """The fixed-ratio run's source share: set by the user, else the best fixed ratio the
    policy's recorded evaluation tuned on ``scenario`` (for a family agent: on its family's base
    scenario), else the labelled untuned default."""
    if cfg.best_ratio is not None:
        return {"source": cfg.best_ratio, "tuned": False, "where": "set in the demo config",
                "label": f"fixed ratio source={cfg.best_ratio:g} (set by you, not tuned)"}
    record = evaluation_record(policy_config)
    base = None
    if record is not None:  # the family's base is read only when the scenario itself has no grid
        found, name, note = record.best_fixed_ratio(scenario), scenario, ""
        if found is None and (base := _family_base(policy_config)) is not None:
            found, name, note = record.best_fixed_ratio(base), base, ", the agent's family's base"
        if found is not None:
            share, where = found
            return {"source": share, "tuned": True, "where": f"{policy_dir}/{CONFIG_NAME} {where}",
                    "label": f"best fixed ratio source={share:g} (grid-searched on {name}{note})"}
    tried = repr(scenario) + (f" or {base!r}" if base else "")
    return {"source": DEFAULT_RATIO, "tuned": False,
            "where": f"no ratio grid for {tried} in {policy_dir}/{CONFIG_NAME} provenance.evaluation",
            "label": f"fixed ratio source={DEFAULT_RATIO:g} (default, NOT tuned)"}


def _scenario(cfg: DemoConfig, policy_config: dict[str, Any]) -> ScenarioRecord:
    """The reward and observation settings the CPT runs score and observe with: the ones the
    agent was trained with (its ``provenance.scenario``), unless ``scenario`` names a spec."""
    if cfg.scenario is not None:
        from mixagent.envs.spec import load_env_spec

        spec = load_env_spec(shipped_path(cfg.scenario))
        return ScenarioRecord(name=spec.name or Path(cfg.scenario).stem, reward=spec.reward,
                              observation=spec.observation)
    found = scenario_record(policy_config)
    if found is None:
        log.warning("the agent's config records no scenario (provenance.scenario) and no --config "
                    "scenario was given: using the default reward and observation")
        return ScenarioRecord(name="unknown")
    return found


# -- CPT runs ------------------------------------------------------------------------------------
def _progress_hook(label: str, max_steps: int, progress: bool | None) -> Callable[[Any], None]:
    """Replace the Trainer's progress bar (which prints every log dict: 19 weights per decision)
    with one compact bar showing the training loss and the latest balanced score (log lines about
    every tenth of the run when the output is not a terminal)."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class _Bar(TrainerCallback):
        def __init__(self) -> None:
            self.bar: Any = None
            self.post: dict[str, str] = {}

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.is_world_process_zero:
                self.bar = Progress(max_steps, f"CPT {label}", "step", progress=progress, logger=log,
                                    log_every=max(1, max_steps // 10))

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kw: Any) -> None:
            if self.bar is None or not logs:
                return
            if "loss" in logs:
                self.post["loss"] = f"{logs['loss']:.3f}"
            if "mixture/score/balanced" in logs:
                self.post["balanced"] = f"{logs['mixture/score/balanced']:+.4f}"
            self.bar.set_postfix(self.post)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.close()

    def hook(trainer: Any) -> None:
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(_Bar())

    return hook


def _field_mean(final: dict[str, Any], domains: list[str], roles: list[str], role: str) -> float:
    vals = [final["losses"][d] for d, r in zip(domains, roles, strict=True) if r == role]
    return float(np.mean(vals)) if vals else float("nan")


def _row(name: str, label: str, summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    final = summary["final"] or {}
    domains, roles = summary["domains"], summary["roles"]
    last = summary["schedule"][-1]["weights"] if summary["schedule"] else {}
    src_share = sum(w for d, w in last.items() if roles[domains.index(d)] == "source")
    em = None
    for metrics in (final.get("tasks") or {}).values():
        if "exact_match" in metrics:
            em = float(metrics["exact_match"])
    scores = final.get("scores", {})
    return {"run": name, "policy": label, "spec": summary["policy"],
            "balanced": scores.get("balanced"), "source": scores.get("source"),
            "target": scores.get("target"),
            "source_loss": _field_mean(final, domains, roles, "source") if final else None,
            "target_loss": _field_mean(final, domains, roles, "target") if final else None,
            "math_exact_match": em, "final_source_share": float(src_share),
            "seconds": round(summary["timing"]["total_seconds"], 1), "dir": str(run_dir),
            "summary": str(run_dir / RUN_SUMMARY_NAME)}


def _cpt_tasks(cfg: DemoConfig, data: Any, reward: RewardSpec) -> list[dict[str, Any]]:
    """The benchmarks the CPT runs score: the demo's own plus those the reward's terms name,
    where the data directory has them (legacy task sets and benchmarks alike)."""
    have = {b.name for b in data.benchmarks}
    wanted = list(dict.fromkeys([*cfg.cpt.tasks, *(k.split(".")[0] for k in
                                                   (*reward.source_terms, *reward.target_terms) if "." in k)]))
    missing = [t for t in wanted if t not in have]
    if missing:
        log.info("the data directory has no task set %s; not scoring it", ", ".join(missing))
    return [{"name": t, "examples": cfg.cpt.task_examples} for t in wanted if t in have]


def _reward_for(reward: RewardSpec, tasks: list[dict[str, Any]]) -> RewardSpec:
    """Drop reward terms of task sets the data directory lacks (logged), keep the rest."""
    names = {t["name"] for t in tasks}

    def keep(terms: dict[str, float]) -> dict[str, float]:
        kept = {k: v for k, v in terms.items() if "." not in k or k.split(".")[0] in names}
        return kept or {"loss": 1.0}

    return reward.model_copy(update={"source_terms": keep(reward.source_terms),
                                     "target_terms": keep(reward.target_terms)})


def _prepare_out(out: Path) -> None:
    """Create the output folder; a previous demo's output in it is replaced, anything else kept
    (refusing a non-empty folder the demo did not write, so a mistyped --out deletes nothing)."""
    if out.exists() and any(out.iterdir()) and not (out / SUMMARY_NAME).is_file() \
            and not (out / ".mixagent-demo").is_file():
        raise ConfigError(f"--out {out} is a non-empty folder that is not a demo's output; choose "
                          "a new folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / ".mixagent-demo").write_text("written by mixagent demo\n", encoding="utf-8")
    for name in (*RUN_NAMES, "from-scratch"):
        shutil.rmtree(out / "runs" / name, ignore_errors=True)
    shutil.rmtree(out / "from-scratch", ignore_errors=True)


# -- from scratch --------------------------------------------------------------------------------
def _from_scratch(cfg: DemoConfig, out: Path, phases: _Phases) -> tuple[Path, dict[str, Any]]:
    """collect -> train (BC + CQL) -> evaluate vs uniform and the best fixed ratio on the proxy
    (``mixagent evaluate`` with one worker, recorded in the fresh agent's card)."""
    from mixagent.evaluation import EvaluateConfig, evaluate
    from mixagent.policies.policy_explorers import make_explorer
    from mixagent.policies.training import TrainConfig, train_policy
    from mixagent.trajectories.collection import CollectConfig, collect

    sc = cfg.scratch
    env_path = shipped_path(sc.env)
    if not env_path.is_file():
        raise ConfigError(f"from_scratch env spec {sc.env} not found (looked in the cwd and beside the package)")
    root = out / "from-scratch"
    traj, pol_dir = root / "trajectories", root / "policy"
    info: dict[str, Any] = {"env": str(env_path)}
    with phases.phase(f"collect {sc.episodes} episodes on {env_path.name} ({cfg.workers} worker(s))") as ph:
        res = collect(CollectConfig(env_spec=str(env_path), out=str(traj), episodes=sc.episodes,
                                    workers=cfg.workers, explorers=list(sc.explorers), seed=cfg.seed,
                                    threads_per_worker=cfg.threads, progress=cfg.progress),
                      explorer_factory=make_explorer)
        info["collect"] = {"episodes": len(res.collected), "transitions": res.transitions,
                           "seconds": round(res.wall_seconds, 1)}
        ph["note"] = f"{res.transitions} transitions"
    with phases.phase(f"train an agent offline (BC {sc.bc_steps} + CQL {sc.cql_steps} steps)") as ph:
        tres = train_policy(TrainConfig(
            algo="cql", trajectories=[str(traj)], name="demo-from-scratch", hyperparameters={
                "seed": cfg.seed, "bc_steps": sc.bc_steps, "cql_steps": sc.cql_steps,
                "batch_size": sc.batch_size, "cql_states": sc.cql_states,
                "eval_every": max(25, sc.cql_steps // 8),
                "checkpoint_every": max(1, sc.bc_steps + sc.cql_steps)}), pol_dir, progress=cfg.progress)
        info["train"] = {"transitions": tres.details["transitions"], "best": tres.details["best"],
                         "seconds": round(tres.seconds, 1)}
        ph["note"] = f"{tres.details['transitions']} transitions"
    with phases.phase(f"evaluate on the proxy (seeds {sc.eval_seeds}; ratio grid on {sc.ratio_seeds})") as ph:
        ev = evaluate(EvaluateConfig(
            envs=[str(env_path)], out=str(root / "evaluation"), seeds=sc.eval_seeds,
            tune_seeds=sc.ratio_seeds, ratio_grid=sc.ratios, workers=1, threads_per_worker=cfg.threads,
            policies=[f"policy:{pol_dir}", "baseline:uniform", "baseline:best_fixed_ratio"],
            record_card=True, plots=False, progress=cfg.progress))
        (rows,) = ev.report["results"].values()
        info["evaluation"] = {r["policy"]: {"balanced_mean": r["balanced"]["mean"],
                                            "balanced_std": r["balanced"]["std"]} for r in rows}
        info["report"] = str(ev.report_md)
        agent, uni = rows[0]["balanced"]["mean"], rows[1]["balanced"]["mean"]
        ph["note"] = f"agent {agent:+.4f} vs uniform {uni:+.4f} balanced"
    return pol_dir, info


# -- the demo ------------------------------------------------------------------------------------
def run_demo(cfg: DemoConfig, report: Report | None = None) -> DemoResult:
    """Run the demo (see the module docstring); ``report`` receives the phase lines."""
    import torch

    from mixagent.cpt.config import CPTConfig
    from mixagent.cpt.run import run_cpt
    from mixagent.data.manifest import DataDir

    say: Report = report or log.info
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(cfg.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars per run
    t0 = time.perf_counter()
    out = Path(cfg.out)
    if not cfg.from_scratch:
        policy_dir = _find_policy(cfg)  # fail before any work
    _prepare_out(out)
    phases = _Phases(5 + (3 if cfg.from_scratch else 0), say)

    with phases.phase("built-in corpus" if cfg.data is None else "data directory") as ph:
        if cfg.data is None:
            from mixagent.data.builtin import build_builtin, default_builtin_dir

            target = default_builtin_dir(cfg.corpus)
            had = (target / "manifest.json").is_file()
            data = DataDir(build_builtin(size=cfg.corpus, seed=0))
            ph["note"] = f"{cfg.corpus}, {'checked' if had else 'built'}: {data.path}"
        else:
            data = DataDir(cfg.data)
            ph["note"] = str(data.path)
        fields = [f.name for f in data.manifest.fields]
        for f in (cfg.source_field, cfg.target_field):
            if f not in fields:
                raise ConfigError(f"field {f!r} is not in {data.path} (fields: {', '.join(fields)})")

    scratch_info = None
    if cfg.from_scratch:
        policy_dir, scratch_info = _from_scratch(cfg, out, phases)
    policy_config = _policy_config(policy_dir)
    trained_with = _scenario(cfg, policy_config)
    scenario, observation = trained_with.name, trained_with.observation
    ratio = _ratio(cfg, policy_dir, policy_config, scenario)
    if not ratio["tuned"]:
        log.info("best fixed ratio: %s (%s)", ratio["label"], ratio["where"])

    with phases.phase(f"base model ({cfg.base.size} Llama on {cfg.source_field})") as ph:
        from mixagent.cpt.model import cached_model

        b = cfg.base
        base_dir, base_meta, reused = cached_model(
            data, cfg.source_field, b.size, tokens=b.tokens, seq_len=b.seq_len, batch_size=b.batch_size,
            lr=b.lr, seed=cfg.seed, progress=cfg.progress)
        meta = {k: base_meta[k] for k in ("parameters", "tokens", "final_train_loss", "seconds") if k in base_meta}
        ph["note"] = f"{'reused' if reused else 'pre-trained'} {base_dir}" + (
            f", {meta['parameters']:,} parameters" if meta.get("parameters") else "")

    tasks = _cpt_tasks(cfg, data, trained_with.reward)
    reward = _reward_for(trained_with.reward, tasks)
    agent_label = "agent trained from scratch" if cfg.from_scratch else f"agent {policy_dir.name}"
    runs = [("agent", agent_label, f"policy:{policy_dir}"),
            ("uniform", "uniform", "baseline:uniform"),
            ("best-ratio", ratio["label"], f"baseline:fixed_ratio?source={ratio['source']}")]
    rows, summaries = [], {}
    c = cfg.cpt
    for name, label, spec in runs:
        run_dir = out / "runs" / name
        with phases.phase(f"CPT {name}: {label}, {c.max_steps} steps, re-weighting every "
                          f"{c.reweight_every}") as ph:
            ccfg = CPTConfig(
                model=str(base_dir), data=str(data.path), policy=spec, out=str(run_dir),
                max_steps=c.max_steps, reweight_every=c.reweight_every,
                fields=[cfg.source_field, cfg.target_field], seq_len=c.seq_len,
                per_device_batch_size=c.batch_size, learning_rate=c.learning_rate,
                warmup_steps=c.warmup_steps, seed=cfg.seed, policy_seed=cfg.seed,
                logging_steps=max(1, min(10, c.reweight_every)),
                eval={"sequences_per_domain": c.eval_sequences, "batch_size": 32, "tasks": tasks},
                reward=reward, observation=observation)
            summary = run_cpt(ccfg, on_trainer=_progress_hook(name, c.max_steps, cfg.progress))
            _drop_model(run_dir)
            summaries[name] = summary
            rows.append(_row(name, label, summary, run_dir))
            if rows[-1]["balanced"] is not None:
                ph["note"] = f"balanced {rows[-1]['balanced']:+.4f}"

    scored = [r for r in rows if r["balanced"] is not None]
    best = max(scored, key=lambda r: r["balanced"])["run"] if scored else ""
    for r in rows:
        r["best"] = r["run"] == best
    plot_path = plot_comparison(summaries, {r["run"]: r["policy"] for r in rows}, out / PLOT_NAME)
    result = DemoResult(out=out, rows=rows, best=best, ratio=ratio, phases=phases.done,
                        plot_path=plot_path, seconds=time.perf_counter() - t0, scratch=scratch_info,
                        run_plots=[Path(r["dir"]) / RUN_PLOT_NAME for r in rows
                                   if (Path(r["dir"]) / RUN_PLOT_NAME).is_file()])
    result.summary_path = out / SUMMARY_NAME
    write_json_atomic(result.summary_path, {
        "format": DEMO_FORMAT, "config": cfg.model_dump(mode="json"), "data": str(data.path),
        "base_model": {"path": str(base_dir), "reused": reused, **meta},
        "policy": str(policy_dir), "scenario": scenario, "best_fixed_ratio": ratio,
        "rows": rows, "best": best, "phases": phases.done, "seconds": round(result.seconds, 1),
        "plot": str(plot_path) if plot_path else None, "from_scratch": scratch_info,
        "torch_threads": cfg.threads, "cpus": os.cpu_count()})
    return result


def _drop_model(run_dir: Path) -> None:
    """The demo keeps summaries and plots, not three copies of the final model."""
    shutil.rmtree(run_dir / "final-model", ignore_errors=True)


# -- plot ----------------------------------------------------------------------------------------
def plot_comparison(summaries: dict[str, dict[str, Any]], labels: dict[str, str], path: Path) -> Path | None:
    """One PNG: the weights over steps of each run (stacked areas: source domains in blues,
    target domains in oranges, side by side), then source / target / balanced score curves."""
    if not summaries:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summaries)
    fig, axes = plt.subplots(2, max(3, len(names)), figsize=(15, 8.5))
    for ax, name in zip(axes[0], names, strict=False):
        s = summaries[name]
        domains, roles, max_steps = s["domains"], s["roles"], s["max_steps"]
        src = [i for i, r in enumerate(roles) if r == "source"]
        tgt = [i for i, r in enumerate(roles) if r != "source"]
        order = src + tgt
        blues = plt.cm.Blues(np.linspace(0.35, 0.9, max(1, len(src))))
        oranges = plt.cm.Oranges(np.linspace(0.35, 0.9, max(1, len(tgt))))
        colors = [*blues[: len(src)], *oranges[: len(tgt)]]
        starts = [min(float(e["start_step"]), max_steps) for e in s["schedule"]]
        edges = np.array([*starts, max_steps], dtype=np.float64)
        w = np.array([[e["weights"][domains[i]] for i in order] for e in s["schedule"]])
        if len(w):
            ax.stackplot(np.repeat(edges, 2)[1:-1], np.repeat(w, 2, axis=0).T, colors=colors)
        ax.set_xlim(0, max_steps)
        ax.set_ylim(0, 1)
        ax.set_title(labels.get(name, name), fontsize=9)
        ax.set_xlabel("optimizer step")
        share = sum(w[-1][: len(src)]) if len(w) else 0.0
        ax.text(0.98, 0.02, f"final source share {share:.2f}", transform=ax.transAxes, ha="right",
                fontsize=8, color="white", bbox={"facecolor": "black", "alpha": 0.4, "pad": 2})
    axes[0][0].set_ylabel("domain weight (blue: source, orange: target)")
    for ax in axes[0][len(names):]:
        ax.axis("off")
    for ax, key in zip(axes[1], ("source", "target", "balanced"), strict=False):
        for name in names:
            s = summaries[name]
            pts = [(d["step"], d["scores"][key]) for d in s["decisions"]]
            if s.get("final"):
                pts.append((s["max_steps"], s["final"]["scores"][key]))
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, y, marker="o", ms=3, label=labels.get(name, name))
        ax.axhline(0.0, color="grey", lw=0.6)
        ax.set_title(f"{key} score (vs. the base; higher is better)", fontsize=9)
        ax.set_xlabel("optimizer step")
    axes[1][0].legend(fontsize=7)
    for ax in axes[1][3:]:
        ax.axis("off")
    fig.suptitle("mixagent demo: CPT of the base model under three mixing policies")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
