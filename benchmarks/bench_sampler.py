"""Sampler throughput against the two things a practitioner would otherwise use.

Prints, from one run on the same data (the built-in corpus, or ``--data DIR``):

* sequences/s of :class:`MixtureSampler` (weighted mixture, batches of token ids),
* sequences/s of slicing the memmaps directly at random positions of one domain — the floor any
  memmap loader pays (no mixing at all) — and the ratio sampler / direct,
* sequences/s of ``datasets.interleave_datasets`` over the same per-domain sequences with the
  same probabilities (static weights: it cannot change them mid-run), and the ratio.

Absolute numbers depend on the machine; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def _rate(fn, n_seqs: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_seqs / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="data directory (default: built-in corpus, size tiny)")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=400)
    args = ap.parse_args()

    from mixagent.data import DataDir
    from mixagent.data.sampler import MixtureSampler

    if args.data is None:
        from mixagent.data.builtin import build_builtin

        args.data = build_builtin(size="tiny")
    data = DataDir(args.data)
    k = len(data.domains)
    w = np.random.default_rng(0).dirichlet(np.ones(k))
    n = args.batch * args.batches
    L = args.seq_len

    def sampler_run() -> None:
        s = MixtureSampler(data, L, w, seed=0)
        for i in range(args.batches):
            if i % 50 == 0:  # re-weight now and then, as a policy would
                s.set_weights(np.roll(w, i // 50))
            s.next_batch(args.batch)

    biggest = max(data.domains, key=lambda d: d.train_tokens).name
    shard = data.tokens(biggest)
    n_chunks = shard.shape[0] // L
    ar = np.arange(L)

    def direct_run() -> None:
        rng = np.random.default_rng(0)
        for _ in range(args.batches):
            starts = rng.integers(0, n_chunks, args.batch) * L
            np.asarray(shard[starts[:, None] + ar[None, :]], dtype=np.int64)

    r_sampler = _rate(sampler_run, n)
    r_direct = _rate(direct_run, n)

    import datasets

    datasets.disable_progress_bars()
    per_domain = []
    for d in data.domain_names:
        t = data.tokens(d)
        m = t.shape[0] // L
        per_domain.append(datasets.Dataset.from_dict({"input_ids": np.asarray(t[: m * L]).reshape(m, L)}).to_iterable_dataset())
    mixed = datasets.interleave_datasets(per_domain, probabilities=w.tolist(), seed=0, stopping_strategy="all_exhausted")
    mixed = mixed.with_format("numpy")

    def hf_run() -> None:
        it = iter(mixed.batch(args.batch))
        for _ in range(args.batches):
            np.asarray(next(it)["input_ids"], dtype=np.int64)

    r_hf = _rate(hf_run, n, repeats=2)

    print(f"data: {args.data}  domains: {k}  seq_len: {L}  batch: {args.batch}  sequences per run: {n}")
    print(f"MixtureSampler (weighted, re-weighted every 50 batches): {r_sampler:12,.0f} seq/s")
    print(f"direct memmap slicing (one domain, random positions):    {r_direct:12,.0f} seq/s")
    print(f"datasets.interleave_datasets (static weights):            {r_hf:12,.0f} seq/s")
    print(f"ratio sampler / direct memmap:          {r_sampler / r_direct:6.2f}x")
    print(f"ratio sampler / interleave_datasets:    {r_sampler / r_hf:6.2f}x")


if __name__ == "__main__":
    main()
