"""The statistics of an evaluation: means, Student-t confidence intervals, paired win rates.

Pure functions of numbers (no I/O, no policies), so they can be checked on constructed inputs.
Seeds are the unit of replication: every policy is evaluated on the same env seeds (the same
data order), so comparisons between two policies are *paired* by seed.

* :func:`summarise` — mean, sample std (``ddof=1``) and the 95% interval
  ``mean ± t_{0.975, n-1} · std / sqrt(n)``; with one seed there is no interval (``None``) and
  the report says so instead of printing a zero-width one.
* :func:`paired` — win rate of A over B (per seed: A > B counts 1, a tie 0.5, a loss 0) and the
  mean paired difference A − B with its t interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

CONFIDENCE = 0.95


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t critical value ``t_{(1+confidence)/2, df}``."""
    from scipy.stats import t

    if df < 1:
        raise ValueError(f"a t interval needs at least 1 degree of freedom, got {df}")
    return float(t.ppf(0.5 + confidence / 2.0, df))


@dataclass(frozen=True)
class Summary:
    """Mean over seeds with its 95% interval (``ci_low``/``ci_high`` None when n == 1)."""

    n: int
    mean: float
    std: float  # sample std (ddof=1); 0.0 when n == 1
    half_width: float | None
    ci_low: float | None
    ci_high: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self, digits: int = 5, signed: bool = True) -> str:
        """``+0.01234 ± 0.00056`` or ``+0.01234 (1 seed, no interval)``."""
        m = f"{self.mean:+.{digits}f}" if signed else f"{self.mean:.{digits}f}"
        if self.half_width is None:
            return f"{m} (n=1, no CI)"
        return f"{m} ± {self.half_width:.{digits}f}"


def summarise(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean, sample std and Student-t interval of ``values`` (one value per seed)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"summarise needs a non-empty 1-d sequence, got shape {x.shape}")
    n = int(x.size)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, 0.0, None, None, None)
    std = float(x.std(ddof=1))
    hw = t_quantile(n - 1, confidence) * std / math.sqrt(n)
    return Summary(n, mean, std, hw, mean - hw, mean + hw)


@dataclass(frozen=True)
class Paired:
    """A against B over the same seeds."""

    n: int
    wins: int
    ties: int
    losses: int
    win_rate: float  # (wins + 0.5 ties) / n
    diff: Summary  # of A - B per seed

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["diff"] = self.diff.to_dict()
        return d


def paired(a: Sequence[float], b: Sequence[float], *, tie_tol: float = 0.0,
           confidence: float = CONFIDENCE) -> Paired:
    """Paired comparison of per-seed scores ``a`` and ``b`` (same seeds, same order).

    A seed where ``|a - b| <= tie_tol`` is a tie and counts half a win; evaluation uses exact
    equality (``tie_tol=0``) because episodes are deterministic, so identical weights give
    identical scores.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(f"paired needs two equal-length non-empty sequences, got {x.shape} and {y.shape}")
    d = x - y
    ties = int((np.abs(d) <= tie_tol).sum())
    wins = int((d > tie_tol).sum())
    losses = int(d.size - wins - ties)
    return Paired(int(d.size), wins, ties, losses, (wins + 0.5 * ties) / d.size,
                  summarise(d, confidence))


def pooled_win_rate(comparisons: Sequence[Paired]) -> float | None:
    """Win rate over all seeds of several paired comparisons (each seed weighs the same)."""
    n = sum(c.n for c in comparisons)
    if n == 0:
        return None
    return sum(c.wins + 0.5 * c.ties for c in comparisons) / n


def ranks(means: Sequence[float]) -> list[int]:
    """Competition ranks, 1 = highest mean; equal means share a rank ("1, 2, 2, 4")."""
    m = list(means)
    return [1 + sum(1 for o in m if o > v) for v in m]


def verdict(p: Paired) -> str:
    """``beats`` when the mean paired difference is positive and its 95% interval excludes 0
    (with one seed: when the single difference is positive); else ``does not beat``."""
    if p.diff.mean <= 0:
        return "does not beat"
    if p.diff.ci_low is None:
        return "beats"
    return "beats" if p.diff.ci_low > 0 else "does not beat"
