"""``run_cpt``: a stock ``transformers.Trainer`` CPT run whose data mixture a policy drives.

Wiring (docs/CPT.md): the model directory is checked against the data directory (tokenizer
hash, domains); every rank builds the same mixture sampler (``world_size=1``; accelerate shards
its batches across ranks) and the same controller; the Trainer runs with
``ignore_data_skip=True`` so a resume does not replay batches — the mixture state saved beside
the checkpoint brings the sampler and the policy back instead. Works as one process and under
``torchrun`` / ``accelerate launch`` (the process group is the Trainer's).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixagent.cpt.callback import MixingCallback
from mixagent.cpt.checks import (
    check_eval,
    check_model_dir,
    domain_space,
    policy_mismatch,
    select_domains,
)
from mixagent.cpt.config import CPTConfig
from mixagent.cpt.controller import DecisionPlan, MixtureController
from mixagent.cpt.dataset import MixtureDataset, MixtureIndexSampler, make_sampler
from mixagent.cpt.outputs import check_out_dir, clear_outputs, find_resume_checkpoint, set_aside
from mixagent.cpt.report import PLOT_NAME, SUMMARY_NAME, plot_weights, summary
from mixagent.cpt.state import load_state, policy_fingerprint
from mixagent.data.manifest import DataDir
from mixagent.errors import ConfigError
from mixagent.policies.protocol import resolve_policy
from mixagent.proxy.evaluation import EVAL_METRICS, Evaluator
from mixagent.utils.io import write_json_atomic

log = logging.getLogger(__name__)


def attach_sampler(trainer: Any, sampler: torch.utils.data.Sampler) -> None:
    """Make any ``Trainer`` (stock or subclass) draw its training batches from ``sampler``.

    The Trainer picks its sampler in ``_get_train_sampler``; setting it on the instance keeps
    the class untouched, so a practitioner's own Trainer subclass works the same way.
    """
    if not trainer.args.ignore_data_skip:
        raise ConfigError("set TrainingArguments(ignore_data_skip=True): the mixture state restores "
                          "the data position; replaying skipped batches would draw them again")
    trainer._get_train_sampler = lambda train_dataset=None: sampler


def _policy_dir(spec: str) -> str | None:
    """The directory a ``policy:DIR`` (or bare directory) spec reads, so --overwrite spares it."""
    scheme, sep, rest = spec.strip().partition(":")
    if not sep:
        return spec if Path(spec).is_dir() else None
    return rest if scheme == "policy" else None


def run_cpt(config: CPTConfig, *, callbacks: Sequence[Any] = (),
            on_read: Callable[[np.ndarray], None] | None = None,
            on_trainer: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Run (or resume) a CPT run; returns the summary (also written to ``out`` by rank 0).

    ``callbacks`` are extra Trainer callbacks; ``on_read`` sees every sample id this rank reads;
    ``on_trainer`` gets the built Trainer before training (e.g. to swap its progress display:
    ``trainer.remove_callback(ProgressCallback)``, which callbacks alone cannot do).
    """
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    t_start = time.perf_counter()
    if config.resume and config.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: --resume continues the "
                          "run in --out, --overwrite deletes it and starts over; pass one of them")
    data = DataDir(config.data)
    check_model_dir(config.model, data)
    names = select_domains(data, config.domains, config.fields)
    space = domain_space(data, names)
    check_eval(data, [t.name for t in config.eval.tasks],
               [*config.reward.source_terms, *config.reward.target_terms])
    policy = resolve_policy(config.policy)
    notes = policy_mismatch(policy, space)
    out = Path(config.out)
    keep = [config.model, config.data, *filter(None, [_policy_dir(config.policy)])]
    to_clear = check_out_dir(out, resume=config.resume, overwrite=config.overwrite, keep=keep)
    ckpt: str | None = None
    skipped: list[tuple[Path, str]] = []
    if config.resume:
        found, skipped = find_resume_checkpoint(out)
        ckpt = str(found)

    model = AutoModelForCausalLM.from_pretrained(config.model, dtype=torch.float32,
                                                 local_files_only=True)
    max_pos = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if max_pos is not None and config.seq_len > max_pos:
        raise ConfigError(f"seq_len {config.seq_len} is longer than the model's context ({max_pos})")
    extra = dict(config.trainer_args)
    extra.setdefault("ddp_find_unused_parameters", False)  # a causal LM uses every parameter
    if not torch.cuda.is_available():  # accelerate needs cpu=True for multi-process CPU (gloo)
        extra.setdefault("use_cpu", True)
        extra.setdefault("dataloader_pin_memory", False)
    save = {"save_strategy": "steps", "save_steps": config.save_steps} if config.save_steps else {"save_strategy": "no"}
    args = TrainingArguments(
        output_dir=str(out), max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate, lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps, weight_decay=config.weight_decay, seed=config.seed,
        save_total_limit=config.save_total_limit, logging_steps=config.logging_steps,
        report_to=config.report_to, ignore_data_skip=True,
        dataloader_num_workers=config.dataloader_num_workers, **save, **extra)
    world = args.world_size
    seen: list[int] = []
    if config.record_samples:
        outer = on_read

        def on_read(ids: np.ndarray) -> None:
            seen.extend(int(i) for i in ids)
            if outer is not None:
                outer(ids)
    per_step = config.per_device_batch_size * config.gradient_accumulation_steps * world
    sampler = make_sampler(data, config.seq_len, names, config.seed)
    index_sampler = MixtureIndexSampler(sampler, config.max_steps * per_step,
                                        chunk=config.per_device_batch_size * world)
    dataset = MixtureDataset(sampler, on_read)
    plan = DecisionPlan(config.max_steps, config.reweight_every, per_step,
                        config.lead_steps + config.dataloader_num_workers * 2)
    task_keys = [(t.name, m) for t in config.eval.tasks
                 for m in EVAL_METRICS[data.benchmark(t.name).kind]]
    t_train: list[float] = []

    def process_timing() -> dict[str, float]:
        """This process's time counters (a resumed run adds the saved totals)."""
        now = time.perf_counter()
        return {"total_seconds": now - t_start,
                "train_seconds": now - t_train[0] if t_train else 0.0,
                "sampling_seconds": index_sampler.plan_seconds + dataset.read_seconds,
                "sampler_plan_seconds": index_sampler.plan_seconds,
                "sampler_read_seconds": dataset.read_seconds,
                "decision_seconds": controller.decision_seconds,
                "eval_seconds": controller.eval_seconds}

    controller = MixtureController(
        sampler=sampler, policy=policy, space=space, plan=plan, reward=config.reward,
        observation=config.observation, task_keys=task_keys, policy_seed=config.policy_seed,
        policy_name=config.policy, policy_id=policy_fingerprint(policy),
        batch={"per_device_batch_size": config.per_device_batch_size,
               "gradient_accumulation_steps": config.gradient_accumulation_steps,
               "world_size": world},
        process_timing=process_timing,
        evaluator_factory=lambda: Evaluator(data, names, config.eval, config.seq_len, args.device))
    resumed_from: int | None = None
    if ckpt is not None:
        saved = load_state(ckpt)
        controller.restore(saved, ckpt)
        resumed_from = saved.global_step
    callback = MixingCallback(controller)
    trainer = Trainer(model=model, args=args, train_dataset=dataset,
                      callbacks=[callback, *callbacks])
    callback.bind(trainer)
    attach_sampler(trainer, index_sampler)
    if on_trainer is not None:
        on_trainer(trainer)

    # last, once every check has passed: a refused run leaves --out as it was
    if args.should_save:  # the rank that writes --out; the others only read their inputs
        clear_outputs(out, to_clear)
        for bad, _ in skipped:
            set_aside(bad)
    t_train.append(time.perf_counter())
    result = trainer.train(resume_from_checkpoint=ckpt)
    final_state = controller.capture(trainer.state.global_step)
    final = None
    if args.process_index == 0:
        final = controller.evaluate(trainer.model)
        trainer.log({f"mixture/final/{k}": v for k, v in final["scores"].items()})
    this_process = process_timing()
    this_process["train_seconds"] = float(result.metrics.get("train_runtime", 0.0))
    # totals over every process of the run (a resumed run adds what the processes before it
    # spent up to the checkpoint it resumed from); this process alone under "this_process"
    timing: dict[str, Any] = controller.total_timing(this_process)
    timing["this_process"] = this_process
    timing["resumed_from_step"] = resumed_from
    report = summary(final_state, policy=policy.describe(), max_steps=config.max_steps, final=final,
                     timing=timing, notes=notes, roles=list(space.roles))
    if config.record_samples:
        write_json_atomic(out / "samples" / f"rank-{args.process_index}.json",
                          {"rank": args.process_index, "world_size": world, "ids": seen,
                           "schedule": final_state.schedule, "global_step": trainer.state.global_step})
    if args.should_save:
        final_dir = out / "final-model"
        trainer.save_model(str(final_dir))
        for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (Path(config.model) / f).is_file():
                shutil.copy2(Path(config.model) / f, final_dir / f)
        write_json_atomic(out / SUMMARY_NAME, report)
        if config.plot:
            plot_weights(final_state, config.max_steps, out / PLOT_NAME,
                         f"{policy.describe()} — weights over the run")
    return report
