"""``mixagent model pretrain`` and ``mixagent cpt``: a base model, then a policy-driven CPT run.

``cpt`` works the same under ``torchrun --nproc_per_node N $(which mixagent) cpt ...`` (or
``accelerate launch``): every rank runs this command; rank 0 evaluates, decides and writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

model_app = typer.Typer(help="Base models for CPT runs: a stand-in for your own Hugging Face "
                        "checkpoint.", no_args_is_help=True)


def _split(text: str | None) -> list[str] | None:
    return [p.strip() for p in text.split(",") if p.strip()] if text else None


def _trainer_args(pairs: list[str]) -> dict[str, Any]:
    from mixagent.errors import ConfigError

    out: dict[str, Any] = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--trainer-arg {p!r}: use KEY=VALUE (a TrainingArguments field)")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


@model_app.command("pretrain")
def pretrain_model_cmd(
    data: Path = typer.Option(..., "--data", help="A mixagent data directory."),
    field: str = typer.Option(..., "--field", help="The field to pre-train on (the source field, e.g. prose)."),
    size: str = typer.Option("small", "--size", help="Llama size: micro, small, medium, large (0.3M, 1.9M, 8.4M, 26M parameters with an 8k vocabulary)."),
    out: Path = typer.Option(..., "--out", help="New folder for the HF model directory."),
    tokens: int = typer.Option(2_000_000, "--tokens", help="Training tokens."),
    seq_len: int = typer.Option(128, "--seq-len", help="Context length (the model's maximum)."),
    batch_size: int = typer.Option(16, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (cosine schedule)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Pre-train a base causal LM on one field: the stand-in for a practitioner's checkpoint.

    Writes config.json + model.safetensors + the data directory's tokenizer, so 'mixagent cpt
    --model OUT' accepts it like any Hugging Face model directory.
    """
    from mixagent.cpt.model import pretrain_model
    from mixagent.data.manifest import DataDir

    meta = pretrain_model(DataDir(data), field, size, out, tokens=tokens, seq_len=seq_len,
                          batch_size=batch_size, lr=lr, seed=seed)
    typer.echo(f"{out}: {meta['parameters']:,} parameters, {meta['tokens']:,} tokens of {field} in "
               f"{meta['seconds']:.1f} s, final train loss {meta['final_train_loss']:.3f}")


def cpt_cmd(
    model: Path = typer.Option(..., "--model", help="HF model directory (with its tokenizer)."),
    data: Path = typer.Option(..., "--data", help="Data directory tokenized with the model's tokenizer."),
    policy: str = typer.Option(..., "--policy", help="'policy:DIR' (a trained policy) or 'baseline:NAME[?k=v]'."),
    out: Path = typer.Option(..., "--out", help="Output folder (checkpoints, summary, plot, final model)."),
    max_steps: int = typer.Option(..., "--max-steps", help="Optimizer steps of the run."),
    reweight_every: int = typer.Option(..., "--reweight-every", help="Steps between policy decisions."),
    fields: str | None = typer.Option(None, "--fields", help="Comma-separated fields to mix (default: all)."),
    domains: str | None = typer.Option(None, "--domains", help="Comma-separated domains (overrides --fields)."),
    seq_len: int = typer.Option(128, "--seq-len"),
    batch_size: int = typer.Option(8, "--batch-size", help="Per-device batch size."),
    grad_accum: int = typer.Option(1, "--grad-accum"),
    lr: float = typer.Option(1e-4, "--lr"),
    warmup_steps: int = typer.Option(0, "--warmup-steps"),
    save_steps: int | None = typer.Option(None, "--save-steps", help="Checkpoint every N steps."),
    save_total_limit: int | None = typer.Option(None, "--save-total-limit"),
    logging_steps: int = typer.Option(10, "--logging-steps"),
    seed: int = typer.Option(0, "--seed"),
    eval_sequences: int = typer.Option(4, "--eval-sequences", help="Held-out sequences per domain per decision."),
    task: list[str] = typer.Option([], "--task", help="A task set of the data directory to score (repeatable)."),
    report_to: str = typer.Option("none", "--report-to", help="Trainer integrations, e.g. tensorboard."),
    trainer_arg: list[str] = typer.Option([], "--trainer-arg", help="Any TrainingArguments KEY=VALUE (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest complete checkpoint in --out (under the same settings)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete the previous run's outputs in --out (checkpoints, summary, plot, final model) and start over; refused if --out holds other files."),
) -> None:
    """Continually pre-train a model with a mixing policy setting the domain weights.

    Every --reweight-every steps the policy sees held-out per-domain losses (as in the proxy
    environment) and sets new weights. Checkpoints carry the mixture state; --resume continues
    exactly. Writes mixagent_cpt_summary.json and mixture_weights.png into --out. An --out that
    already holds a run needs --resume (continue it) or --overwrite (start over).
    """
    from mixagent.cpt.config import CPTConfig
    from mixagent.cpt.run import run_cpt

    cfg = CPTConfig(model=str(model), data=str(data), policy=policy, out=str(out), max_steps=max_steps,
                    reweight_every=reweight_every, fields=_split(fields), domains=_split(domains),
                    seq_len=seq_len, per_device_batch_size=batch_size,
                    gradient_accumulation_steps=grad_accum, learning_rate=lr,
                    warmup_steps=warmup_steps, save_steps=save_steps,
                    save_total_limit=save_total_limit, logging_steps=logging_steps, seed=seed,
                    eval={"sequences_per_domain": eval_sequences, "batch_size": 32,
                          "tasks": [{"name": t} for t in task]},
                    report_to=_split(report_to) or ["none"], resume=resume, overwrite=overwrite,
                    trainer_args=_trainer_args(trainer_arg))
    report = run_cpt(cfg)
    final = report.get("final")
    if final is not None:
        s = final["scores"]
        typer.echo(f"done: source {s['source']:+.4f}  target {s['target']:+.4f}  balanced "
                   f"{s['balanced']:+.4f} (vs. the model at step 0); summary in {out}")
