"""Where the proxy's training step spends its time, and how far MFU can go at this model size.

    python benchmarks/profile_step.py [--spec envs/prose-to-math.yaml] [--threads 1] [--steps 30]
        [--no-eval] [--prototype] [--prototype-compile] [--rounds 3] [--json out.json]

Builds the exact proxy model of the spec (random init), the env's fused AdamW with its parameter
groups, and runs the library's own :func:`mixagent.proxy.training.train_steps` (forward, the
engine's loss :func:`~mixagent.proxy.training.lm_loss`, backward, gradient clipping, AdamW step,
zero_grad) on random tokens of the real batch shape. Prints, from one run:

1. **MFU of the training step** (no profiler): FlopCounterMode FLOPs of one step over its median
   wall time, against the 1024² fp32 reference matmul of :mod:`mixagent.proxy.flops`.
2. **Profile table** (``torch.profiler``, CPU): self-CPU time per step grouped into categories
   (GEMM kernels by module: attention q/k/v/o projections, MLP, LM head; linear glue; attention
   core; norms; MLP activation; embedding; cross-entropy; optimizer; clipping; other ops; the
   autograd engine's node bookkeeping; Python/framework = profiled wall minus every event's self
   time). Columns: ms/step, share of the profiled step, FLOPs/step (FlopCounterMode, by module),
   achieved GFLOP/s. Backward ops are attributed to the module of the forward op that created
   their autograd node (profiler ``sequence_nr``).
3. **Shape ceilings**: every distinct GEMM (op, shapes, strides) of one step, captured with a
   dispatch mode, timed in isolation (median of repeats), as GFLOP/s and as a fraction of the
   reference; then ``ceiling MFU if every non-GEMM op were free`` = step FLOPs / sum over the
   step's GEMM calls of their isolated times, and the same for the whole env step (48 training
   steps + one evaluation) unless ``--no-eval``.
4. ``--prototype``: PROTOTYPES ONLY (not the library's code path): a chunked fused LM-head +
   cross-entropy with a custom backward that never materialises the full logits; prints its
   step speed-up over the real step and the max abs difference of loss and gradients.
   ``--prototype-compile``: the same for ``torch.compile(lm_loss)`` (compiles first).

Caveat: the profiler defeats the allocator tuning (page faults per profiled step are printed), so
the logits-sized memory-bound ops (cross-entropy) are inflated in the table, more so with many
steps; ``--steps 10`` gives the least distorted profile. MFU and prototypes are timed without it.

The last line is one JSON object: ``mfu_step``, ``gemm_share``, ``ceiling_gemm_only`` and the
category shares (plus prototype results when run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mixagent.proxy.flops import count_flops, matmul_flops_per_second  # noqa: E402
from mixagent.proxy.model import build_model  # noqa: E402
from mixagent.proxy.runtime import configure_runtime  # noqa: E402
from mixagent.proxy.training import lm_loss, make_optimizer, train_steps  # noqa: E402

GEMM_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
PROJ = {"q_proj": "attn", "k_proj": "attn", "v_proj": "attn", "o_proj": "attn",
        "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp", "lm_head": "lm_head",
        "c_attn": "attn", "c_proj": "attn", "c_fc": "mlp"}  # (gpt2 names: best effort)
CATEGORIES = [
    "gemm: attn q/k/v/o", "gemm: mlp", "gemm: lm head",
    "linear glue (view/t/matmul)", "attention core (sdpa, rope)", "norms (RMSNorm)",
    "mlp activation (silu*mul)", "embedding fwd/bwd", "cross-entropy", "optimizer (AdamW)",
    "grad clipping", "other ops (adds, grad accum, copies)", "autograd engine nodes",
    "python/framework (rest)",
]
CE_OPS = ("cross_entropy", "log_softmax", "nll_loss", "logsumexp")


# -- setup ---------------------------------------------------------------------------------------
def build(spec_path: str, seed: int = 0) -> dict[str, Any]:
    from mixagent.envs.setup import resolve_spec

    resolved = resolve_spec(spec_path)
    spec = resolved.spec
    device = configure_runtime(spec.runtime)  # as the engine does: CPU allocator tuning
    model = build_model(resolved.hf_config, seed).to(device)
    optimizer = make_optimizer(model, spec.cpt.optimizer)
    return {"resolved": resolved, "spec": spec, "device": device, "model": model,
            "optimizer": optimizer}


def batches_for(spec: Any, vocab: int, steps: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (steps, spec.cpt.batch_size, spec.cpt.seq_len), generator=g)


def step_flops(model: torch.nn.Module, tokens: torch.Tensor) -> int:
    """FLOPs of one forward + backward of the LM loss (FlopCounterMode, as in proxy.flops)."""
    model.train()
    flops = count_flops(lambda: lm_loss(model, tokens).backward())
    model.zero_grad(set_to_none=True)
    return flops


GEMM_CATEGORY = {"attn": "gemm: attn q/k/v/o", "mlp": "gemm: mlp", "lm_head": "gemm: lm head",
                 "other": "gemm: ?"}


def flops_by_category(calls: list[tuple[str, tuple, str]], total: int) -> dict[str, int]:
    """GEMM FLOPs per module kind (from the dispatch capture); the rest of FlopCounterMode's
    total (attention kernels, if it counts them) goes to the attention core."""
    out: dict[str, int] = defaultdict(int)
    for op, layout, kind in calls:
        out[GEMM_CATEGORY[kind]] += gemm_flops(op, layout)
    rest = total - sum(out.values())
    if rest:
        out["attention core (sdpa, rope)"] = rest
    return dict(out)


# -- timing --------------------------------------------------------------------------------------
def time_train(model, optimizer, batches, lrs, clip, clock=time.perf_counter) -> float:
    t0 = clock()
    train_steps(model, optimizer, batches, lrs, clip)
    return clock() - t0


# -- profiler attribution ------------------------------------------------------------------------
class ModuleLabels:
    """record_function labels around every module's forward (``mod:<leaf name>``)."""

    def __init__(self, model: torch.nn.Module):
        self.handles = []
        self.stack: list[Any] = []
        for name, mod in model.named_modules():
            leaf = name.rsplit(".", 1)[-1] if name else "model"
            if leaf.isdigit():
                leaf = "layer"
            self.handles.append(mod.register_forward_pre_hook(self._enter(leaf)))
            self.handles.append(mod.register_forward_hook(self._exit))

    def _enter(self, leaf: str):
        def hook(mod, args):
            rf = torch.profiler.record_function(f"mod:{leaf}")
            rf.__enter__()
            self.stack.append(rf)
        return hook

    def _exit(self, mod, args, out):
        self.stack.pop().__exit__(None, None, None)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _is_annotation(e) -> bool:
    return bool(getattr(e, "is_user_annotation", False)) or e.name.startswith(
        ("mod:", "prof:", "Optimizer.", "ProfilerStep"))


def _is_autograd_node(e) -> bool:
    n = e.name
    return n.startswith("autograd::engine::evaluate_function") or (
        not n.startswith("aten::") and ("Backward" in n or "AccumulateGrad" in n))


def _context(e) -> tuple[list[str], str | None]:
    """Labels enclosing an event (innermost first) and its top-level aten ancestor's name."""
    labels, top_aten = [], None
    p = e
    while p is not None:
        if p.name.startswith(("mod:", "prof:", "Optimizer.")):
            labels.append(p.name)
        elif p.name.startswith("aten::"):
            top_aten = p.name
        p = p.cpu_parent
    return labels, top_aten


def _category_from_forward(labels: list[str], top_aten: str | None, name: str) -> str:
    for lab in labels:
        if lab.startswith("Optimizer.step"):
            return "optimizer (AdamW)"
        if lab.startswith("Optimizer.zero_grad"):
            return "optimizer (AdamW)"
        if lab == "prof:clip":
            return "grad clipping"
    mods = [lab[4:] for lab in labels if lab.startswith("mod:")]
    if mods:
        inner = mods[0]
        if inner in PROJ:
            if name in GEMM_OPS:
                return {"attn": "gemm: attn q/k/v/o", "mlp": "gemm: mlp",
                        "lm_head": "gemm: lm head"}[PROJ[inner]]
            return "linear glue (view/t/matmul)"
        if "norm" in inner or inner.startswith("ln_"):
            return "norms (RMSNorm)"
        if inner in ("self_attn", "attn", "rotary_emb"):
            return "attention core (sdpa, rope)"
        if inner in ("mlp", "act_fn", "act"):
            return "mlp activation (silu*mul)"
        if inner in ("embed_tokens", "wte", "wpe"):
            return "embedding fwd/bwd"
    probe = f"{top_aten or ''} {name}"
    if any(k in probe for k in CE_OPS):
        return "cross-entropy"
    return "other ops (adds, grad accum, copies)"


def attribute(events, steps: int, wall: float):
    """Self-CPU ms per step by category (see module docstring), by (category, op), and the mean
    in-step microseconds of each GEMM (op, input shapes)."""
    events = list(events)
    seq_cat: dict[int, str] = {}
    fwd_cat: dict[int, str] = {}
    # forward ops: category by context; remember which category each autograd node belongs to
    for e in events:
        if _is_annotation(e) or _is_autograd_node(e):
            continue
        labels, top = _context(e)
        in_bwd = False
        p = e.cpu_parent
        while p is not None:
            if p.name.startswith("autograd::engine::evaluate_function"):
                in_bwd = True
                break
            p = p.cpu_parent
        if in_bwd:
            continue
        cat = _category_from_forward(labels, top, e.name)
        fwd_cat[id(e)] = cat
        if e.sequence_nr >= 0:
            seq_cat[e.sequence_nr] = cat
    ms: dict[str, float] = defaultdict(float)
    by_op: dict[tuple[str, str], float] = defaultdict(float)
    gemm_us: dict[tuple, list[float]] = defaultdict(list)
    total_self = 0.0
    for e in events:
        self_us = e.self_cpu_time_total
        if _is_annotation(e):
            continue  # their self time is Python between ops: part of the rest
        total_self += self_us
        if e.name in GEMM_OPS:
            shapes = tuple(tuple(x) for x in e.input_shapes if x)
            gemm_us[(e.name[6:], shapes)].append(e.cpu_time_total)
        if _is_autograd_node(e):
            ms["autograd engine nodes"] += self_us
            by_op[("autograd engine nodes", e.name.split(": ")[-1])] += self_us / 1e3 / steps
            continue
        if id(e) in fwd_cat:
            ms[fwd_cat[id(e)]] += self_us
            by_op[(fwd_cat[id(e)], e.name)] += self_us / 1e3 / steps
            continue
        node = e.cpu_parent
        while node is not None and not node.name.startswith("autograd::engine::evaluate_function"):
            node = node.cpu_parent
        cat = seq_cat.get(node.sequence_nr) if node is not None else None
        if cat is None:
            cat = "other ops (adds, grad accum, copies)"
        elif cat in ("gemm: attn q/k/v/o", "gemm: mlp", "gemm: lm head",
                     "linear glue (view/t/matmul)"):
            # backward of a linear: the node's forward op may be the GEMM or its glue
            cat = _linear_bwd_category(node, e.name, seq_cat)
        ms[cat] += self_us
        by_op[(cat, e.name + " (bwd)")] += self_us / 1e3 / steps
    out = {k: v / 1e3 / steps for k, v in ms.items()}
    out["python/framework (rest)"] = wall * 1e3 / steps - total_self / 1e3 / steps
    return out, dict(by_op), {k: statistics.mean(v) for k, v in gemm_us.items()}


def _linear_bwd_category(node, name: str, seq_cat: dict[int, str]) -> str:
    cat = seq_cat[node.sequence_nr]
    if cat == "linear glue (view/t/matmul)":
        return cat if name not in GEMM_OPS else "gemm: ?"
    return cat if name in GEMM_OPS else "linear glue (view/t/matmul)"


# -- GEMM capture and isolated timing ------------------------------------------------------------
def capture_gemms(fn) -> list[tuple[str, tuple, str]]:
    """(op, ((shape, stride), ...), module category) of every GEMM that ``fn()`` runs."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.module_tracker import ModuleTracker

    ops = {torch.ops.aten.mm.default: "mm", torch.ops.aten.addmm.default: "addmm",
           torch.ops.aten.bmm.default: "bmm", torch.ops.aten.baddbmm.default: "baddbmm"}
    calls: list[tuple[str, tuple, str]] = []
    tracker = ModuleTracker()

    class Capture(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in ops:
                layout = tuple((tuple(a.shape), tuple(a.stride())) for a in args
                               if isinstance(a, torch.Tensor))
                leaves = {p.rsplit(".", 1)[-1] for p in tracker.parents}
                kinds = {PROJ[x] for x in leaves if x in PROJ}
                kind = "lm_head" if "lm_head" in kinds else (kinds.pop() if kinds else "other")
                calls.append((ops[func], layout, kind))
            return func(*args, **(kwargs or {}))

    with tracker, Capture():
        fn()
    return calls


def gemm_flops(op: str, layout: tuple) -> int:
    if op in ("mm", "addmm"):
        (m, k), (_, n) = layout[-2][0], layout[-1][0]
        return 2 * m * k * n
    (b, m, k), (_, _, n) = layout[-2][0], layout[-1][0]
    return 2 * b * m * k * n


def time_gemm(op: str, layout: tuple, repeats: int = 9, min_sample_s: float = 2e-3,
              clock=time.process_time) -> float:
    """Median CPU seconds of one call of ``op`` on fresh tensors of the same shapes and strides
    (CPU time of this process: steadier than wall time when other processes share the cores;
    compared against the reference matmul timed with the same clock)."""
    args = [torch.empty_strided(shape, stride).normal_() for shape, stride in layout]
    fn = getattr(torch, op)
    fn(*args)
    t0 = clock()
    fn(*args)
    one = max(clock() - t0, 1e-7)
    inner = max(1, int(min_sample_s / one))
    samples = []
    for _ in range(repeats):
        t0 = clock()
        for _ in range(inner):
            fn(*args)
        samples.append((clock() - t0) / inner)
    return statistics.median(samples)


def describe(layout: tuple) -> str:
    parts = []
    for shape, stride in layout:
        contiguous = list(stride) == list(torch.empty(shape).stride())
        parts.append("x".join(map(str, shape)) + ("" if contiguous else "ᵀ"))
    return " @ ".join(parts)


# -- PROTOTYPE: chunked fused LM head + cross-entropy --------------------------------------------
class _ChunkedHeadCE(torch.autograd.Function):
    """PROTOTYPE. Mean CE of ``hidden @ weight.T`` against ``targets`` in row chunks; gradients
    are computed in the forward pass (softmax - onehot per chunk, consumed at once by two GEMMs)
    so the full ``[N, vocab]`` logits, log-probs and their gradient are never materialised."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk):
        n = hidden.shape[0]
        grad_h = torch.empty_like(hidden)
        grad_w = torch.zeros_like(weight)
        loss = hidden.new_zeros(())
        scratch = hidden.new_empty(min(chunk, n), weight.shape[0])
        for s in range(0, n, chunk):
            h = hidden[s:s + chunk]
            t = targets[s:s + chunk]
            logits = scratch[: h.shape[0]]
            torch.mm(h, weight.t(), out=logits)
            lse = torch.logsumexp(logits, dim=1)
            loss += lse.sum() - logits.gather(1, t[:, None]).sum()
            logits.sub_(lse[:, None]).exp_()  # softmax, in place
            logits.scatter_add_(1, t[:, None], logits.new_full((h.shape[0], 1), -1.0))
            torch.mm(logits, weight, out=grad_h[s:s + chunk])
            grad_w.addmm_(logits.t(), h)
        grad_h.div_(n)
        grad_w.div_(n)
        ctx.save_for_backward(grad_h, grad_w)
        return loss / n

    @staticmethod
    def backward(ctx, g):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * g, grad_w * g, None, None


def prototype_loss(model: torch.nn.Module, tokens: torch.Tensor, chunk: int) -> torch.Tensor:
    """PROTOTYPE of :func:`lm_loss` with the chunked fused head (same value, same gradients)."""
    hidden = model.base_model(input_ids=tokens[:, :-1], use_cache=False).last_hidden_state
    h = hidden.reshape(-1, hidden.size(-1))
    return _ChunkedHeadCE.apply(h, model.lm_head.weight, tokens[:, 1:].reshape(-1), chunk)


def check_prototype(model, tokens, loss_fn) -> dict[str, float]:
    """Max abs difference of loss and of every parameter's gradient vs the real path."""
    model.zero_grad(set_to_none=True)
    ref = lm_loss(model, tokens)
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    got = loss_fn(model, tokens)
    got.backward()
    dg = max(float((p.grad - ref_grads[n]).abs().max()) for n, p in model.named_parameters())
    gmax = max(float(g.abs().max()) for g in ref_grads.values())
    model.zero_grad(set_to_none=True)
    ref, got = ref.detach(), got.detach()
    return {"loss": float(ref), "loss_abs_diff": abs(float(got) - float(ref)),
            "grad_max_abs_diff": dg, "grad_max_abs": gmax}


# -- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=str(ROOT / "envs" / "prose-to-math.yaml"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30, help="profiled/timed steps after warm-up")
    ap.add_argument("--no-eval", action="store_true", help="skip the env-step (evaluation) ceiling")
    ap.add_argument("--prototype", action="store_true",
                    help="also measure the PROTOTYPE chunked fused LM head + cross-entropy")
    ap.add_argument("--chunks", default="64,128", help="prototype row-chunk sizes")
    ap.add_argument("--prototype-compile", action="store_true",
                    help="also measure the PROTOTYPE torch.compile(lm_loss) (compiles ~1 min)")
    ap.add_argument("--rounds", type=int, default=3, help="profiled rounds (fastest is shown)")
    ap.add_argument("--top", type=int, default=20, help="ops listed by self time")
    ap.add_argument("--json", help="also write the final JSON object here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    b = build(args.spec)
    spec, model, optimizer = b["spec"], b["model"], b["optimizer"]
    clip = spec.cpt.optimizer.grad_clip
    vocab = b["resolved"].hf_config.vocab_size
    n = args.steps
    warm = batches_for(spec, vocab, 5, seed=1)
    batches = batches_for(spec, vocab, n, seed=2)
    lrs = [1e-3] * max(n, 5)
    print(f"spec {args.spec}: vocab {vocab}, batch {spec.cpt.batch_size} x seq "
          f"{spec.cpt.seq_len}, {sum(p.numel() for p in model.parameters()):,} params, "
          f"tied={b['resolved'].hf_config.tie_word_embeddings}, threads {args.threads}, "
          f"grad_clip {clip}, {spec.cpt.steps_per_action} steps per env step")

    train_flops = step_flops(model, warm[0])

    def one_step():
        model.train()
        lm_loss(model, warm[0]).backward()
        model.zero_grad(set_to_none=True)

    calls = capture_gemms(one_step)
    fcat = flops_by_category(calls, train_flops)

    # 1. un-profiled step time, interleaved with the reference matmul
    time_train(model, optimizer, warm, lrs, clip)
    refs, step_s, cpu_refs, cpu_mfus = [], [], [], []
    for _ in range(3):
        refs.append(matmul_flops_per_second(args.threads))
        cpu_refs.append(matmul_flops_per_second(args.threads, clock=time.process_time))
        c0 = time.process_time()
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step_s.append(time_train(model, optimizer, batches, lrs, clip) / n)
        step_faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / n
        cpu_mfus.append(train_flops * n / (time.process_time() - c0) / cpu_refs[-1])
    ref = statistics.median(refs)
    step = statistics.median(step_s)
    mfu_step = statistics.median(train_flops / t / r for t, r in zip(step_s, refs, strict=True))
    mfu_cpu = statistics.median(cpu_mfus)
    print(f"\nreference 1024² fp32 matmul: {ref / 1e9:.1f} GFLOP/s wall, "
          f"{statistics.median(cpu_refs) / 1e9:.1f} GFLOP/CPU-s (medians of {len(refs)})")
    print(f"training step: {train_flops / 1e9:.3f} GFLOP in {step * 1e3:.2f} ms = "
          f"{train_flops / step / 1e9:.1f} GFLOP/s -> MFU {mfu_step:.3f} (per CPU-second: "
          f"{mfu_cpu:.3f})")

    # 2. profile
    import torch.nn.utils as nn_utils

    real_clip = nn_utils.clip_grad_norm_

    def labelled_clip(*a, **k):
        with torch.profiler.record_function("prof:clip"):
            return real_clip(*a, **k)

    labels = ModuleLabels(model)
    nn_utils.clip_grad_norm_ = labelled_clip
    try:
        time_train(model, optimizer, warm, lrs, clip)
        best = None
        for _ in range(args.rounds):  # keep the round least disturbed by other processes
            # no record_shapes: its allocations fragment the heap, so the logits-sized blocks
            # land on fresh pages again (page faults) and the memory-bound ops inflate
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                t0 = time.perf_counter()
                train_steps(model, optimizer, batches, lrs, clip)
                wall = time.perf_counter() - t0
            faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / n
            if best is None or wall < best[0]:
                best = (wall, prof, faults)
    finally:
        nn_utils.clip_grad_norm_ = real_clip
        labels.remove()
    wall, prof, faults = best
    ms, by_op, _ = attribute(prof.events(), n, wall)
    prof_step_ms = wall * 1e3 / n
    print(f"\nprofiled step: {prof_step_ms:.2f} ms, fastest of {args.rounds} profiled rounds "
          f"(un-profiled {step * 1e3:.2f} ms; the profiler adds per-op cost; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {faults:.0f} minor page faults per "
          f"profiled step, {step_faults:.0f} un-profiled)")
    print(f"{'category':38s} {'ms/step':>8s} {'share':>6s} {'MFLOP/step':>11s} {'GFLOP/s':>8s}")
    shares = {}
    for cat in CATEGORIES + sorted(set(ms) - set(CATEGORIES)):
        t = ms.get(cat, 0.0)
        f = fcat.get(cat, 0)
        shares[cat] = t / prof_step_ms
        rate = f"{f / (t / 1e3) / 1e9:8.1f}" if f and t > 0 else f"{'':8s}"
        fl = f"{f / 1e6:11.1f}" if f else f"{'':11s}"
        print(f"{cat:38s} {t:8.2f} {t / prof_step_ms:6.1%} {fl} {rate}")
    print(f"{'total':38s} {prof_step_ms:8.2f} {1:6.1%} {train_flops / 1e6:11.1f} "
          f"{train_flops / (prof_step_ms / 1e3) / 1e9:8.1f}")
    gemm_share = sum(v for k, v in shares.items() if k.startswith("gemm"))

    print("\ntop ops by self time (ms/step) and their category:")
    for (cat, name), t in sorted(by_op.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"  {t:7.2f}  {name:48s} {cat}")

    # 3. shape ceilings
    cpu_ref = matmul_flops_per_second(args.threads, clock=time.process_time)
    distinct: dict[tuple, dict] = {}
    for op, layout, kind in calls:
        d = distinct.setdefault((op, layout), {"count": 0, "kinds": set()})
        d["count"] += 1
        d["kinds"].add(kind)
    print(f"\nGEMMs of one training step in isolation ({len(calls)} calls, {len(distinct)} "
          "distinct op/shape/stride; ᵀ = transposed view; median CPU time of 9; of ref: vs "
          f"the reference timed alike now, {cpu_ref / 1e9:.1f} GFLOP/CPU-s):")
    print(f"{'op':6s} {'shapes':28s} {'module':8s} {'calls':>5s} {'MFLOP':>6s} {'us':>7s} "
          f"{'GFLOP/s':>7s} {'of ref':>6s}")
    gemm_time = 0.0
    gemm_fl = 0
    for (op, layout), d in sorted(distinct.items(), key=lambda kv: -gemm_flops(*kv[0]) * kv[1]["count"]):
        s = time_gemm(op, layout)
        f = gemm_flops(op, layout)
        d["seconds"] = s
        gemm_time += s * d["count"]
        gemm_fl += f * d["count"]
        print(f"{op:6s} {describe(layout):28s} {','.join(sorted(d['kinds'])):8s} {d['count']:5d} "
              f"{f / 1e6:6.1f} {s * 1e6:7.1f} {f / s / 1e9:7.1f} {f / s / cpu_ref:6.2f}")
    ceiling = train_flops / gemm_time / cpu_ref
    print(f"GEMM FLOPs {gemm_fl / 1e9:.3f} of {train_flops / 1e9:.3f} GFLOP counted; sum of isolated "
          f"GEMM times {gemm_time * 1e3:.2f} ms/step ({gemm_fl / gemm_time / 1e9:.1f} GFLOP/s)")
    print(f"ceiling MFU (training step) if every non-GEMM op were free: {ceiling:.3f}")
    result: dict[str, Any] = {"mfu_step": round(mfu_step, 4), "mfu_step_cpu": round(mfu_cpu, 4), "gemm_share": round(gemm_share, 4),
                              "ceiling_gemm_only": round(ceiling, 4),
                              "step_ms": round(step * 1e3, 3), "ref_gflops": round(ref / 1e9, 2),
                              "train_step_flops": train_flops,
                              "shares": {k: round(v, 4) for k, v in shares.items()}}

    if not args.no_eval:
        from mixagent.proxy.evaluation import Evaluator

        r = b["resolved"]
        evaluator = Evaluator(r.data, r.domains, spec.eval, spec.cpt.seq_len, b["device"])
        eval_flops = count_flops(lambda: evaluator(model))
        evaluator(model)
        eval_s = statistics.median(_timed(lambda: evaluator(model)) for _ in range(3))
        ecalls = capture_gemms(lambda: evaluator(model))
        etime: dict[tuple, float] = {}
        eval_gemm = 0.0
        for op, layout, _ in ecalls:
            if (op, layout) not in etime:
                etime[(op, layout)] = time_gemm(op, layout, repeats=5)
            eval_gemm += etime[(op, layout)]
        cpu_ref2 = matmul_flops_per_second(args.threads, clock=time.process_time)
        k = spec.cpt.steps_per_action
        env_flops = k * train_flops + eval_flops
        env_s = k * step + eval_s
        # isolated GEMM times are CPU seconds: compare with the CPU-clock reference
        env_ceiling = env_flops / (k * gemm_time + eval_gemm) / statistics.median(
            [cpu_ref, cpu_ref2])
        print(f"\nevaluation: {eval_flops / 1e9:.3f} GFLOP in {eval_s * 1e3:.1f} ms "
              f"(MFU {eval_flops / eval_s / ref:.3f}); {len(ecalls)} GEMM calls, "
              f"{eval_gemm * 1e3:.1f} ms isolated")
        print(f"env step ({k} training steps + evaluation, no env overhead): "
              f"{env_flops / 1e9:.1f} GFLOP in {env_s:.3f} s -> MFU {env_flops / env_s / ref:.3f}; "
              f"ceiling if every non-GEMM op were free: {env_ceiling:.3f}")
        result.update({"mfu_env_step_est": round(env_flops / env_s / ref, 4),
                       "ceiling_env_step": round(env_ceiling, 4),
                       "eval_mfu": round(eval_flops / eval_s / ref, 4)})

    if args.prototype:
        print("\nPROTOTYPE (not the library's code path): chunked fused LM head + cross-entropy")
        variants = {f"chunk {c}": _chunked(int(c)) for c in args.chunks.split(",")}
        result["prototype_chunked_head_ce"] = run_prototypes(
            variants, model, optimizer, warm, batches, lrs, clip, train_flops, args.threads)
    if args.prototype_compile:
        print("\nPROTOTYPE (not the library's code path): torch.compile of lm_loss (model + CE); "
              "the optimizer, clipping and loop stay eager")
        compiled = torch.compile(lm_loss)
        t0 = time.perf_counter()
        compiled(model, warm[0]).backward()
        model.zero_grad(set_to_none=True)
        print(f"compile (forward + backward graphs): {time.perf_counter() - t0:.1f} s")
        result["prototype_compile"] = run_prototypes(
            {"compiled lm_loss": compiled}, model, optimizer, warm, batches, lrs, clip,
            train_flops, args.threads)

    line = json.dumps(result)
    if args.json:
        Path(args.json).write_text(line + "\n")
    print(line)
    return 0


def _chunked(chunk: int):
    return lambda model, tokens: prototype_loss(model, tokens, chunk)


def run_prototypes(variants, model, optimizer, warm, batches, lrs, clip, train_flops,
                   threads) -> dict[str, Any]:
    """Step time of each variant vs the real ``train_steps``, interleaved (3 rounds, medians;
    MFU against a reference matmul timed in each round), and its loss/gradient differences."""
    n = batches.shape[0]
    out: dict[str, Any] = {}
    for name, fn in variants.items():
        diff = check_prototype(model, warm[0], fn)
        train_steps(model, optimizer, warm, lrs, clip, fn)
        real_t, proto_t, refs = [], [], []
        for _ in range(3):
            refs.append(matmul_flops_per_second(threads))
            real_t.append(time_train(model, optimizer, batches, lrs, clip) / n)
            t0 = time.perf_counter()
            train_steps(model, optimizer, batches, lrs, clip, fn)
            proto_t.append((time.perf_counter() - t0) / n)
        rt, pt = statistics.median(real_t), statistics.median(proto_t)
        speedup = statistics.median(r / p for r, p in zip(real_t, proto_t, strict=True))
        m_real = statistics.median(train_flops / t / r for t, r in zip(real_t, refs, strict=True))
        m_proto = statistics.median(train_flops / t / r for t, r in zip(proto_t, refs, strict=True))
        print(f"{name:16s}: step {rt * 1e3:.2f} -> {pt * 1e3:.2f} ms ({speedup:.2f}x), MFU "
              f"{m_real:.3f} -> {m_proto:.3f}; |dloss| {diff['loss_abs_diff']:.2e}, max |dgrad| "
              f"{diff['grad_max_abs_diff']:.2e} (max |grad| {diff['grad_max_abs']:.2e})")
        out[name] = {"real_ms": round(rt * 1e3, 3), "proto_ms": round(pt * 1e3, 3),
                     "speedup": round(speedup, 3), "mfu_real": round(m_real, 4),
                     "mfu": round(m_proto, 4), **diff}
    return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
