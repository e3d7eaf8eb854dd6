"""Learning-rate schedules, precomputed as a table so the training loop only indexes it."""

from __future__ import annotations

import math

import numpy as np

from mixagent.proxy.config import LRSpec


def lr_table(spec: LRSpec, total: int) -> np.ndarray:
    """The learning rate of each of ``total`` optimizer steps (see :class:`LRSpec`)."""
    lrs = np.empty(total, dtype=np.float64)
    peak, low = spec.peak, spec.peak * spec.min_ratio
    warm = min(spec.warmup_steps, total)
    decay_start = total - max(1, round(spec.decay_fraction * total))
    for step in range(total):
        if step < warm:
            lrs[step] = peak * (step + 1) / warm
        elif spec.schedule == "constant":
            lrs[step] = peak
        elif spec.schedule == "cosine":
            span = max(1, total - 1 - warm)
            progress = min(1.0, (step - warm) / span)
            lrs[step] = low + (peak - low) * 0.5 * (1.0 + math.cos(math.pi * progress))
        else:  # wsd
            if step < max(decay_start, warm):
                lrs[step] = peak
            else:
                span = max(1, total - 1 - max(decay_start, warm))
                progress = (step - max(decay_start, warm)) / span
                lrs[step] = peak + (low - peak) * progress
    return lrs
