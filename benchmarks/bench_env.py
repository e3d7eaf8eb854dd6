"""Benchmark of the proxy CPT environment: overhead, signal-to-noise, realism.

    python benchmarks/bench_env.py [envs/prose-to-math.yaml] [--seeds 4] [--json out.json]
        [--features alignment,benchmark_scores [--alignment-params head|all]
         [--alignment-sequences N]]

Prints, from one run:

(a) **Overhead**: the time of an env step (training one re-weighting step's tokens, evaluating,
    building observation and reward) divided by the time of a bare nanoGPT-style training loop of
    the same model on the same number of tokens: same batch shape, same fused AdamW with the same
    parameter groups, LR set every step, gradient clipping, batches for the whole chunk gathered
    from the same memmaps in one vectorised gather per domain. Env steps and bare chunks are
    interleaved (alternating which goes first) and the median of the per-pair ratios is
    reported, so load from other processes hits both alike. Target ≤ 1.05, bar ≤ 1.10.
    With ``--features``, the same again on the spec with those observation groups on
    (``observation.features``; the alignment's gradients cost most): bar ≤ 1.15.
(b) **Signal-to-noise**: the spread (std) of the final balanced score over diverse fixed
    mixtures (reset seed 0), divided by its spread over reset seeds (data orders) of one mixture.
    Must be ≥ 3, or the environment cannot teach an agent anything.
(m) **Utilisation (MFU)**: an env step's FLOPs (one training step's forward + backward and one
    evaluation, counted with ``FlopCounterMode``, times their counts per env step) per second of
    its wall time, over a large fp32 matmul's FLOP/s on the same threads, timed just before each
    sampled step (:mod:`mixagent.proxy.flops`); also the training part alone (comparable to a
    bare loop). Goal ≥ 0.6 on one thread at the shipped size.
(c) **Realism**: target-only CPT must clearly degrade the source field (relative held-out loss
    change reported), and the best fixed mixture must beat both source-only and target-only on
    balanced score.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def mixtures(env, rng: np.random.Generator, n_random: int) -> dict[str, np.ndarray]:
    """Diverse fixed mixtures: field shares from source-only to target-only, plus random ones."""
    tgt = env.is_target
    k = env.num_domains

    def share(t: float) -> np.ndarray:
        return np.where(tgt, t / tgt.sum(), (1.0 - t) / (~tgt).sum())

    out = {f"target={t:.2f}": share(t) for t in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)}
    out["uniform-domains"] = np.full(k, 1.0 / k)
    data = env.resolved.data
    toks = np.array([data.domain(d).train_tokens for d in env.domain_names], dtype=float)
    out["tokens"] = toks / toks.sum()
    for i in range(n_random):
        out[f"dirichlet-{i}"] = rng.dirichlet(np.full(k, 0.5))
    return out


def run_fixed(env, weights: np.ndarray, seed: int) -> dict:
    env.reset(seed=seed)
    done, info, total = False, {}, 0.0
    while not done:
        _, r, done, _, info = env.step_weights(weights)
        total += r
    return {"return": total, **info["scores"], "terms": info["terms"],
            "task_metrics": info["task_metrics"], "losses": info["losses"].tolist()}


def bare_loop_factory(env):
    """A bare training loop of the env's model on the env's data: no env, no sampler, no eval."""
    import torch
    import torch.nn.functional as F

    from mixagent.proxy.runtime import thread_scope

    eng = env.engine
    cpt = env.env_spec.cpt
    model = eng.model
    opt_spec = cpt.optimizer
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": opt_spec.weight_decay},
              {"params": other, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cpt.lr.peak, betas=tuple(opt_spec.betas), eps=opt_spec.eps,
                            fused=True)
    params = decay + other
    maps = [env.resolved.data.tokens(d, "train") for d in env.domain_names]
    rng = np.random.default_rng(0)
    ar = np.arange(cpt.seq_len)
    lrs = eng.lrs
    b = cpt.batch_size

    def run(steps: int) -> float:
        with thread_scope(eng.threads):  # the same torch threads as the env's steps
            return _run(steps)

    def _run(steps: int) -> float:
        t0 = time.perf_counter()
        model.train()
        # one vectorised gather per domain for the whole chunk (as the env does), round robin
        rows = np.empty((steps * b, cpt.seq_len), dtype=np.int64)
        dom = np.arange(steps * b) % len(maps)
        for d, m in enumerate(maps):
            sel = np.flatnonzero(dom == d)
            ix = rng.integers(0, m.shape[0] - cpt.seq_len, sel.size)
            rows[sel] = m[ix[:, None] + ar]
        batches = torch.from_numpy(rows).view(steps, b, cpt.seq_len).to(eng.device)
        for i in range(steps):
            x = batches[i]
            for g in opt.param_groups:
                g["lr"] = float(lrs[i % len(lrs)])
            logits = model(input_ids=x[:, :-1], use_cache=False).logits
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))
            loss.backward()
            if opt_spec.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, opt_spec.grad_clip, foreach=True)
            opt.step()
            opt.zero_grad(set_to_none=True)
        float(loss.detach())  # synchronise (CUDA), as the env reads its losses once per step
        return time.perf_counter() - t0

    return run


def overhead(env, pairs: int) -> dict:
    """Interleaved env steps and bare chunks of the same tokens; median ratio of the pairs."""
    steps = env.env_spec.cpt.steps_per_action
    bare = bare_loop_factory(env)
    w = np.full(env.num_domains, 1.0 / env.num_domains)
    env.reset(seed=123)
    bare(2)  # warm up both paths
    env.step_weights(w)
    ratios, env_t, bare_t, train_t, eval_t = [], [], [], [], []
    for p in range(pairs):
        if env.engine.steps_left < steps:
            env.reset(seed=123)
        tb = bare(steps) if p % 2 else 0.0  # alternate the order within pairs
        t0 = time.perf_counter()
        _, _, _, _, info = env.step_weights(w)
        te = time.perf_counter() - t0
        tb = tb or bare(steps)
        ratios.append(te / tb)
        env_t.append(te)
        bare_t.append(tb)
        train_t.append(float(info["train_time"]))
        eval_t.append(float(info["eval_time"]))
    env.engine.reset(0)  # the bare loop trained the env's model: put the base back
    return {
        "ratio_median": statistics.median(ratios),
        "ratio_of_medians": statistics.median(env_t) / statistics.median(bare_t),
        "env_step_s": statistics.median(env_t),
        "bare_s": statistics.median(bare_t),
        "train_s": statistics.median(train_t),
        "eval_s": statistics.median(eval_t),
        "pairs": pairs,
        "tokens_per_step": env.env_spec.cpt.tokens_per_step,
        "eval_tokens": env.engine.evaluator.num_tokens,
    }


def utilisation(env, samples: int, seed: int = 123, warm_up: bool = False):
    """MFU of env steps (uniform weights) against the reference matmul, interleaved (an
    :class:`~mixagent.proxy.flops.MFUReport`; bench_collect.py measures with this too)."""
    from mixagent.proxy.flops import env_step_flops, measure_mfu

    eng = env.engine
    w = np.full(env.num_domains, 1.0 / env.num_domains)

    def step() -> tuple[float, float]:
        if eng.steps_left < env.env_spec.cpt.steps_per_action:
            env.reset(seed=seed)
        _, _, _, _, info = env.step_weights(w)
        return float(info["wall_time"]), float(info["train_time"])

    env.reset(seed=seed)
    if warm_up:
        step()
    return measure_mfu(step, env_step_flops(eng), eng.threads, samples, eng.device)


def report_utilisation(m: dict) -> None:
    f = m["flops"]
    print(f"\n(m) utilisation on {m['threads']} thread(s): env step {f['total'] / 1e9:.2f} GFLOP "
          f"({f['train_steps']} x {f['train_step'] / 1e9:.3f} training + {f['evaluation'] / 1e9:.3f} "
          f"evaluation); achieved {m['achieved_flops_per_second'] / 1e9:.1f} GFLOP/s vs reference "
          f"matmul {m['reference_flops_per_second'] / 1e9:.1f} GFLOP/s")
    cpu = m["env_step_cpu"]
    print(f"    MFU (median of {m['samples']}): env step {m['env_step']:.3f}, training alone "
          f"{m['train']:.3f}   (goal >= 0.6 on one thread); per CPU-second "
          f"{'n/a' if cpu is None else f'{cpu:.3f}'} (steadier under load)")


def with_features(spec, features: list[str], params: str | None, sequences: int | None):
    """``spec`` with the observation groups ``features`` on (alignment settings if given)."""
    from mixagent.envs.spec import ObservationSpec

    obs = spec.observation.model_dump()
    obs["features"] = features
    if "alignment" in features:
        align = dict(obs.get("alignment") or {})
        if params is not None:
            align["params"] = params
        if sequences is not None:
            align["sequences"] = sequences
        obs["alignment"] = align
    return spec.model_copy(update={"observation": ObservationSpec(**obs)})


def report_overhead(a: dict, bar: float, label: str) -> None:
    print(f"\n(a) overhead{label}: env step {a['env_step_s']:.3f} s (train {a['train_s']:.3f} s, "
          f"eval {a['eval_s']:.3f} s) vs bare loop {a['bare_s']:.3f} s on "
          f"{a['tokens_per_step']:,} tokens; eval reads {a['eval_tokens']:,} tokens")
    print(f"    ratio (median of {a['pairs']} interleaved pairs) = {a['ratio_median']:.3f}   "
          f"[ratio of medians {a['ratio_of_medians']:.3f}]   bar <= {bar:.2f}: "
          f"{'PASS' if a['ratio_median'] <= bar else 'FAIL'}")
    print(f"    inside the env step, everything but training (sampling, evaluation, observation, "
          f"reward) costs {100 * (a['env_step_s'] / a['train_s'] - 1):.1f}% of the training time")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", nargs="?", default=str(ROOT / "envs" / "prose-to-math.yaml"))
    ap.add_argument("--seeds", type=int, default=4, help="reset seeds of the noise mixture")
    ap.add_argument("--random-mixtures", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=7, help="env/bare pairs timed for (a)")
    ap.add_argument("--noise-mixture", default="target=0.50")
    ap.add_argument("--mfu-samples", type=int, default=5, help="env steps timed for (m)")
    ap.add_argument("--overhead-only", action="store_true", help="measure (a) and (m) only")
    ap.add_argument("--features", default="", help="also measure (a) with these observation "
                    "groups on, comma-separated (alignment, benchmark_scores); bar 1.15")
    ap.add_argument("--alignment-params", choices=["head", "all"], default=None)
    ap.add_argument("--alignment-sequences", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    import torch

    from mixagent.envs.proxy_env import ProxyCPTEnv

    t0 = time.perf_counter()
    env = ProxyCPTEnv(args.spec)
    spec = env.env_spec
    threads = env.engine.threads or torch.get_num_threads()
    print(f"spec {args.spec}: {env.num_domains} domains ({int(env.is_target.sum())} target), "
          f"{spec.cpt.num_steps} steps x {spec.cpt.tokens_per_step:,} tokens, torch threads "
          f"{threads}, device {env.engine.device}; env ready in "
          f"{time.perf_counter() - t0:.1f} s")
    meta = json.loads((env.engine.base_path / "mixagent_base.json").read_text())
    print(f"base: {meta['parameters']:,} params, {meta['tokens']:,} tokens, pre-trained in "
          f"{meta['seconds']:.0f} s (cached at {env.engine.base_path})")

    # (a) -------------------------------------------------------------------------------------
    a = overhead(env, args.pairs)
    report_overhead(a, 1.10, " (target <= 1.05)")
    m = utilisation(env, args.mfu_samples).as_dict()
    report_utilisation(m)
    a["mfu"] = m
    features = [f for f in args.features.split(",") if f]
    if features:
        fspec = with_features(spec, features, args.alignment_params, args.alignment_sequences)
        fenv = ProxyCPTEnv(fspec)
        a["features"] = overhead(fenv, args.pairs)
        a["features"]["observation"] = fspec.observation.model_dump(mode="json")
        report_overhead(a["features"], 1.15, f" with {fspec.observation.model_dump(mode='json')}")
        fenv.close()

    if args.overhead_only:
        return 0

    # (b), (c) ----------------------------------------------------------------------------------
    rng = np.random.default_rng(0)
    mixes = mixtures(env, rng, args.random_mixtures)
    results: dict[str, dict] = {}
    t1 = time.perf_counter()
    for name, w in mixes.items():
        results[name] = run_fixed(env, w, seed=0)
        r = results[name]
        print(f"    {name:16s} source {r['source']:+.4f}  target {r['target']:+.4f}  balanced "
              f"{r['balanced']:+.4f}", flush=True)
    episode_s = (time.perf_counter() - t1) / len(mixes)
    noise = [results[args.noise_mixture]["balanced"]]
    for s in range(1, args.seeds):
        r = run_fixed(env, mixes[args.noise_mixture], seed=s)
        noise.append(r["balanced"])
        print(f"    {args.noise_mixture} seed {s}: balanced {r['balanced']:+.4f}", flush=True)
    signal = float(np.std([r["balanced"] for r in results.values()], ddof=1))
    spread = float(np.std(noise, ddof=1))
    snr = signal / spread if spread > 0 else float("inf")
    print(f"\n(b) signal-to-noise: std of final balanced score over {len(mixes)} mixtures = "
          f"{signal:.5f}; over {args.seeds} seeds of {args.noise_mixture} = {spread:.5f}; "
          f"SNR = {snr:.1f}   (must be >= 3: {'PASS' if snr >= 3 else 'FAIL'})")
    inner = [r["balanced"] for n, r in results.items() if n not in ("target=0.00", "target=1.00")]
    inner_snr = float(np.std(inner, ddof=1)) / spread if spread > 0 else float("inf")
    print(f"    without the single-field extremes ({len(inner)} mixtures): SNR = {inner_snr:.1f}")

    src_only, tgt_only = results["target=0.00"], results["target=1.00"]
    best_name = max(results, key=lambda n: results[n]["balanced"])
    best = results[best_name]
    forget = -tgt_only["terms"]["source.loss"]  # relative source loss increase
    src_idx = ~env.is_target
    base_src = env.base_losses[src_idx].mean()
    tgt_src = np.asarray(tgt_only["losses"])[src_idx].mean()
    print(f"\n(c) realism: target-only CPT raises the source held-out loss by {100 * forget:.2f}% "
          f"on average per domain (mean source loss {base_src:.3f} -> {tgt_src:.3f} nats); "
          f"source-only changes it by {-100 * src_only['terms']['source.loss']:+.2f}%")
    print(f"    balanced: source-only {src_only['balanced']:+.4f}, target-only "
          f"{tgt_only['balanced']:+.4f}, best fixed mixture {best_name} {best['balanced']:+.4f}: "
          f"{'PASS' if best['balanced'] > max(src_only['balanced'], tgt_only['balanced']) else 'FAIL'}")
    for task, m in tgt_only["task_metrics"].items():
        print(f"    {task}: exact match base {env.base_tasks[task]['exact_match']:.3f}, target-only "
              f"{m['exact_match']:.3f}, best {best['task_metrics'][task]['exact_match']:.3f}; "
              f"answer loss base {env.base_tasks[task]['answer_loss']:.3f}, target-only "
              f"{m['answer_loss']:.3f}")
    print(f"\nepisode wall time {episode_s:.1f} s; whole benchmark {time.perf_counter() - t0:.0f} s")
    if args.json:
        out = {"overhead": a, "snr": snr, "snr_without_extremes": inner_snr, "signal_std": signal, "noise_std": spread,
               "noise": noise, "results": results, "episode_s": episode_s,
               "best": best_name, "forgetting_target_only": forget}
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
