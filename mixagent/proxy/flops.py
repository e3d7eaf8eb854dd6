"""Model FLOP utilisation (MFU) of the proxy: FLOPs an env step does vs what the cores can do.

Wall time alone says little across machines; MFU does. The numerator counts the FLOPs of one
training step (forward + backward of the LM loss) and of one evaluation with
``torch.utils.flop_counter.FlopCounterMode`` (matmuls and attention only: the optimizer and the
elementwise ops are overhead by this definition, as in the MFU literature), multiplied by how
often each happens per env step. The denominator is the FLOP/s of a large fp32 matmul measured
on the same device and the same torch thread count, in the same process and run, so machine
speed and background load largely cancel out. Benchmarks (``bench_env.py``, ``bench_collect.py``)
use this one definition.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from mixagent.proxy.runtime import thread_scope
from mixagent.proxy.training import lm_loss


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs that ``fn()`` performs, as ``FlopCounterMode`` counts them (matmul-class ops)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_flops_per_second(threads: int | None = None, n: int = 1024, repeats: int = 7,
                            device: torch.device | str = "cpu",
                            clock: Callable[[], float] = time.perf_counter) -> float:
    """FLOP/s of an ``n × n`` fp32 matmul on ``threads`` torch threads (median of ``repeats``).

    The median, not the best: on a shared machine the median is what the proxy's step also sees,
    so the ratio stays honest under moderate load. ``clock=time.process_time`` gives FLOPs per
    CPU-second instead (see :class:`MFUReport`).
    """
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    out = torch.empty(n, n, device=dev)
    times = []
    with thread_scope(threads):
        torch.mm(a, b, out=out)  # warm-up
        for _ in range(repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = clock()
            torch.mm(a, b, out=out)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times.append(clock() - t0)
    return 2.0 * n**3 / statistics.median(times)


@dataclass
class StepFlops:
    """FLOPs of one env step of a :class:`~mixagent.proxy.engine.ProxyEngine`."""

    train_step: int  # one optimizer step's forward + backward
    train_steps: int  # optimizer steps per env step
    evaluation: int  # one evaluation (held-out losses + benchmarks), plus alignment if attached

    @property
    def total(self) -> int:
        return self.train_step * self.train_steps + self.evaluation

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def env_step_flops(engine: Any) -> StepFlops:
    """Count one env step's FLOPs on a copy of ``engine``'s model (the engine is not changed)."""
    model = copy.deepcopy(engine.model)
    cpt = engine.cpt
    tokens = torch.zeros(cpt.batch_size, cpt.seq_len, dtype=torch.long, device=engine.device)

    def train() -> None:
        model.train()
        lm_loss(model, tokens).backward()

    def evaluate() -> None:
        engine.evaluator(model)
        if engine.aligner is not None:
            engine.aligner(model)

    with thread_scope(engine.threads):
        train_flops = count_flops(train)
        eval_flops = count_flops(evaluate)
    return StepFlops(train_flops, cpt.steps_per_action, eval_flops)


def mfu(flops: float, seconds: float, peak_flops_per_second: float) -> float:
    """Achieved FLOP/s over the reference matmul's FLOP/s."""
    return flops / seconds / peak_flops_per_second


@dataclass
class MFUReport:
    """Median MFU over interleaved samples (each step against a reference matmul timed just
    before it, so load from other processes hits both alike).

    ``env_step`` and ``train`` are per wall second (the definition). On a machine where other
    processes compete for the cores a millisecond matmul and a ten-second step see different
    shares of a core, so ``env_step_cpu`` also gives the ratio per CPU-second of this process
    (FLOPs per CPU-second of the step over those of the matmul): equal to ``env_step`` on an
    idle machine, and far steadier under load (cache and memory-bandwidth contention remain).
    """

    env_step: float  # all of an env step's FLOPs over its wall time
    train: float  # training FLOPs over the training time alone (comparable to a bare loop)
    env_step_cpu: float | None  # per CPU-second of this process (None on CUDA)
    reference_flops_per_second: float  # median of the reference matmul
    achieved_flops_per_second: float  # median of the env step
    flops: StepFlops
    threads: int
    samples: int

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["flops"] = self.flops.as_dict()
        return out


def measure_mfu(run_step: Callable[[], tuple[float, float]], flops: StepFlops,
                threads: int | None, samples: int = 5,
                device: torch.device | str = "cpu") -> MFUReport:
    """Time ``samples`` env steps, each after a reference matmul on the same threads.

    ``run_step()`` performs one env step and returns ``(wall seconds, training seconds)`` (an
    env's ``info["wall_time"]``, ``info["train_time"]``).
    """
    on_cpu = torch.device(device).type == "cpu"
    env_mfu, train_mfu, cpu_mfu, peaks, achieved = [], [], [], [], []
    for _ in range(samples):
        peak = matmul_flops_per_second(threads, device=device)
        if on_cpu:
            cpu_peak = matmul_flops_per_second(threads, device=device, clock=time.process_time)
        c0 = time.process_time()
        wall, train = run_step()
        cpu = time.process_time() - c0
        peaks.append(peak)
        achieved.append(flops.total / wall)
        env_mfu.append(mfu(flops.total, wall, peak))
        train_mfu.append(mfu(flops.train_step * flops.train_steps, train, peak))
        if on_cpu and cpu > 0:
            cpu_mfu.append(mfu(flops.total, cpu, cpu_peak))
    return MFUReport(statistics.median(env_mfu), statistics.median(train_mfu),
                     statistics.median(cpu_mfu) if cpu_mfu else None,
                     statistics.median(peaks), statistics.median(achieved), flops,
                     threads or torch.get_num_threads(), samples)
