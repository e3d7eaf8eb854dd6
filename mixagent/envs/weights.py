"""Parsing a fixed mixture from text: ``uniform``, ``tokens``, ``0.2,0.8,...`` or ``prose=0.3,math=0.7``.

Shared by the CLI (``mixagent env run --weights``) and scripts, so a mixture written down in a
report can be pasted back verbatim.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from mixagent.errors import ConfigError


def parse_weights(text: str, domains: Sequence[str], field_of: Callable[[str], str],
                  tokens_of: Callable[[str], int] | None = None,
                  where: str = "weights") -> np.ndarray:
    """Domain weights (normalised, in ``domains`` order) from a mixture description.

    * ``uniform`` — equal weights; ``tokens`` — proportional to training tokens;
    * ``a,b,c,...`` — one number per domain, in order;
    * ``key=value,...`` — ``key`` is a field (its share is spread evenly over its domains) or a
      domain name; unnamed domains get 0.
    """
    k = len(domains)
    spec = text.strip()
    if spec == "uniform":
        return np.full(k, 1.0 / k)
    if spec == "tokens":
        if tokens_of is None:
            raise ConfigError(f"{where}: 'tokens' is not available here")
        w = np.array([float(tokens_of(d)) for d in domains])
        return w / w.sum()
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise ConfigError(f"{where}: empty; use 'uniform', 'tokens', {k} comma-separated numbers, "
                          "or field=share pairs like 'prose=0.3,math=0.7'")
    fields = sorted({field_of(d) for d in domains}, key=[field_of(d) for d in domains].index)
    w = np.zeros(k)
    if all("=" not in p for p in parts):
        if len(parts) != k:
            raise ConfigError(f"{where}: {len(parts)} numbers given, expected {k} (one per domain: "
                              f"{', '.join(domains)})")
        for i, p in enumerate(parts):
            w[i] = _number(p, where, f"position {i}")
    else:
        for p in parts:
            key, sep, value = p.partition("=")
            key = key.strip()
            if not sep:
                raise ConfigError(f"{where}: {p!r} is not key=value; do not mix plain numbers with "
                                  "key=value pairs")
            share = _number(value, where, key)
            if key in fields:
                members = [i for i, d in enumerate(domains) if field_of(d) == key]
                w[members] += share / len(members)
            elif key in domains:
                w[list(domains).index(key)] += share
            else:
                raise ConfigError(f"{where}: {key!r} is neither a field ({', '.join(fields)}) nor a "
                                  f"domain ({', '.join(domains)}) of this environment")
    if w.sum() <= 0:
        raise ConfigError(f"{where}: all weights are zero; give at least one domain a positive share")
    return w / w.sum()


def _number(text: str, where: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"{where}: {what}: {text.strip()!r} is not a number") from None
    if not math.isfinite(v) or v < 0:
        raise ConfigError(f"{where}: {what}: {v} must be a finite non-negative number")
    return v
