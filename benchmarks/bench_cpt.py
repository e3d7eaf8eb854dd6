"""Overhead of the mixture on a CPT run through the real ``transformers.Trainer``.

Prints, from one single-process run (``run_cpt``, the code ``mixagent cpt`` runs):

1. **Sampling + policy share** of the Trainer's wall time: choosing samples (the Webster plan
   behind the torch sampler) plus the policy's decisions (observation, ``act``, scheduling;
   broadcast in multi-process runs) — goal ≤ 0.4 % (AC-ODM's reported online-mixing overhead).
   Reading the chosen tokens from the memmaps is printed separately: any data loader pays it.
2. **In-run evaluation share**: the held-out per-domain losses measured at every decision
   (``--eval-sequences`` sequences per domain, batched, no_grad), at the demo's settings
   (120 steps of 8x128 tokens, a decision every 20); with ``--features`` also each field's
   benchmark (``--task-examples`` items) and the per-domain gradient alignment, i.e. what a
   policy with the v2 observation groups sees (goal: <= 5 % of the Trainer's wall time).

The model is a ``model pretrain``-sized Llama (random init: the overhead does not depend on
the weights) on the built-in corpus (``--data`` for another data directory). Absolute times
depend on the machine and its load; the shares are what to compare.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="data directory (default: the built-in corpus at --builtin)")
    ap.add_argument("--builtin", default="small", help="built-in corpus size (the demo's: small)")
    ap.add_argument("--size", default="small", help="model size (mixagent.cpt.model.SIZES)")
    ap.add_argument("--policy", default="baseline:velocitune")
    ap.add_argument("--max-steps", type=int, default=120)
    ap.add_argument("--reweight-every", type=int, default=20)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--eval-sequences", type=int, default=4)
    ap.add_argument("--features", default="", help="observation groups, e.g. benchmark_scores,alignment: "
                    "every field's benchmark is then scored at each decision")
    ap.add_argument("--task-examples", type=int, default=32, help="items per benchmark (the demo's 32)")
    ap.add_argument("--fields", default="prose,math", help="source,target fields")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from mixagent.cpt.config import CPTConfig
    from mixagent.cpt.model import init_model_dir
    from mixagent.cpt.run import run_cpt
    from mixagent.data.manifest import DataDir

    if args.data:
        data_path = Path(args.data)
    else:
        from mixagent.data.builtin import build_builtin

        data_path = Path(build_builtin(size=args.builtin))
    data = DataDir(data_path)
    fields = args.fields.split(",")
    features = [f for f in args.features.split(",") if f]
    tasks: list[dict] = []
    extra: dict = {}
    if features:
        from mixagent.envs.spec import RewardSpec

        bench = {b.field: b.name for b in data.manifest.benchmarks}
        bench.update({t.field: t.name for t in data.manifest.tasks if t.field not in bench})
        missing = [f for f in fields if f not in bench]
        if missing:
            raise SystemExit(f"no benchmark for field(s) {missing} in {data_path}")
        tasks = [{"name": bench[f], "examples": args.task_examples} for f in fields]
        extra = {"reward": RewardSpec(normalisation="bounded",
                                      source_terms={f"{bench[fields[0]]}.answer_logprob": 1.0},
                                      target_terms={f"{bench[fields[1]]}.answer_logprob": 1.0}),
                 "observation": {"features": features}}
    with tempfile.TemporaryDirectory() as tmp:
        model = init_model_dir(data, Path(tmp) / "model", args.size, args.seq_len)
        cfg = CPTConfig(model=str(model), data=str(data_path), policy=args.policy,
                        out=str(Path(tmp) / "run"), max_steps=args.max_steps,
                        reweight_every=args.reweight_every, seq_len=args.seq_len,
                        per_device_batch_size=args.batch_size, logging_steps=args.reweight_every,
                        eval={"sequences_per_domain": args.eval_sequences, "batch_size": 32,
                              "tasks": tasks},
                        fields=fields, plot=False, trainer_args={"disable_tqdm": True}, **extra)
        report = run_cpt(cfg)
    t = report["timing"]
    train = t["train_seconds"]
    choose = t["sampler_plan_seconds"] + t["decision_seconds"]
    k = len(report["domains"])
    print(f"CPT run: {args.size} Llama, {k} domains, {args.max_steps} steps of {args.batch_size}x"
          f"{args.seq_len} tokens, {len(report['decisions'])} decisions ({args.policy}); "
          f"Trainer wall time {train:.1f} s | load average {os.getloadavg()[0]:.2f}")
    print(f"  sampling + policy: {choose * 1e3:8.1f} ms = {100 * choose / train:.3f} % of wall time "
          f"(plan {t['sampler_plan_seconds'] * 1e3:.1f} ms, decisions {t['decision_seconds'] * 1e3:.1f} ms)"
          f"  [goal <= 0.4 %]")
    print(f"  token reads (memmap gathers, any loader pays them): {t['sampler_read_seconds'] * 1e3:8.1f} ms "
          f"= {100 * t['sampler_read_seconds'] / train:.3f} %")
    in_run = sum(d["eval_seconds"] for d in report["decisions"])
    what = f"{args.eval_sequences} sequences/domain"
    if features:
        what += f" + {', '.join(t['name'] for t in tasks)} ({args.task_examples} items each) + {', '.join(features)}"
    print(f"  in-run evaluation: {in_run:8.2f} s = {100 * in_run / train:.2f} % "
          f"({what} at each of {len(report['decisions'])} decisions)  [goal <= 5 %]")


if __name__ == "__main__":
    main()
