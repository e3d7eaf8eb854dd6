"""Parsing a fixed mixture from text: ``uniform``, ``tokens``, ``0.2,0.8,...`` or ``prose=0.3,math=0.7``.

Shared by the CLI (``mixagent env run --weights``) and scripts, so a mixture written down in a
report can be pasted back verbatim. :func:`parse_weights_explained` also says, in words, every
adjustment the parse made (a field's share spread over its domains, shares rescaled to sum to 1),
so that a command running the mixture can show what it actually runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from mixagent.data.sampler import validate_weights
from mixagent.errors import ConfigError, DataError

_FORMS = "use 'uniform', 'tokens', {k} comma-separated numbers, or field=share pairs like " \
         "'prose=0.3,math=0.7'"


def parse_weights(text: str, domains: Sequence[str], field_of: Callable[[str], str],
                  tokens_of: Callable[[str], int] | None = None,
                  where: str = "weights") -> np.ndarray:
    """Domain weights (normalised, in ``domains`` order) from a mixture description.

    * ``uniform`` — equal weights; ``tokens`` — proportional to training tokens;
    * ``a,b,c,...`` — one number per domain, in order;
    * ``key=value,...`` — ``key`` is a field (its share is spread evenly over its domains) or a
      domain name; unnamed domains get 0. Each key may appear once, and a domain may not be
      named both by itself and through its field (which of the two shares was meant?).

    Shares need not sum to 1: they are rescaled (huge finite shares do not overflow);
    :func:`parse_weights_explained` says when that happened.
    """
    return parse_weights_explained(text, domains, field_of, tokens_of, where)[0]


def parse_weights_explained(text: str, domains: Sequence[str], field_of: Callable[[str], str],
                            tokens_of: Callable[[str], int] | None = None,
                            where: str = "weights") -> tuple[np.ndarray, list[str]]:
    """:func:`parse_weights` plus notes: one sentence per adjustment made to the given shares.

    A mixture that silently differs from what was typed (``prose=0.3,math=0.3`` runs as 50/50)
    misleads whoever reads the results, so callers that run it should show these notes.
    """
    domains = list(domains)
    k = len(domains)
    spec = text.strip()
    if spec == "uniform":
        return np.full(k, 1.0 / k), []
    if spec == "tokens":
        if tokens_of is None:
            raise ConfigError(f"{where}: 'tokens' is not available here")
        w = np.array([float(tokens_of(d)) for d in domains])
        return _normalise(w, where), []
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise ConfigError(f"{where}: empty; {_FORMS.format(k=k)}")
    field_names = [field_of(d) for d in domains]
    fields = list(dict.fromkeys(field_names))
    notes: list[str] = []
    w = np.zeros(k)
    if all("=" not in p for p in parts):
        if len(parts) != k:
            raise ConfigError(f"{where}: {len(parts)} numbers given, expected {k} (one per domain: "
                              f"{', '.join(domains)})")
        for i, p in enumerate(parts):
            w[i] = _number(p, where, f"position {i}")
    else:
        named_by: dict[int, str] = {}  # domain index -> the key that gave it its share
        for p in parts:
            key, sep, value = p.partition("=")
            key = key.strip()
            if not sep:
                raise ConfigError(f"{where}: {p!r} is not key=value; do not mix plain numbers with "
                                  "key=value pairs")
            share = _number(value, where, key)
            if key in fields:
                members = [i for i, f in enumerate(field_names) if f == key]
            elif key in domains:
                members = [domains.index(key)]
            else:
                raise ConfigError(f"{where}: {key!r} is neither a field ({', '.join(fields)}) nor a "
                                  f"domain ({', '.join(domains)}) of this environment")
            for i in members:
                if i in named_by:
                    raise ConfigError(_twice(where, named_by[i], key, domains[i]))
                named_by[i] = key
            w[members] = share / len(members)
            if len(members) > 1:
                notes.append(f"{key}={_fmt(share)} spread over its {len(members)} domains: "
                             f"{_fmt(share / len(members))} each")
        unnamed = [d for i, d in enumerate(domains) if i not in named_by]
        if unnamed:
            notes.append(f"{len(unnamed)} domain{'s' if len(unnamed) != 1 else ''} not named "
                         f"get weight 0: {', '.join(unnamed)}")
    out = _normalise(w, where)
    total = float(w.max()) * float((w / w.max()).sum())
    if not math.isclose(total, 1.0, rel_tol=1e-9):
        given = f"{_fmt(total)}, not 1" if math.isfinite(total) else "more than the largest float"
        notes.append(f"the given shares sum to {given}; rescaled to sum to 1")
    return out, notes


def _twice(where: str, first: str, second: str, domain: str) -> str:
    if first == second:
        return (f"{where}: {first!r} is given twice; give each field or domain once (shares "
                "are not added up)")
    return (f"{where}: domain {domain!r} gets a share from both {first!r} and {second!r}; give "
            "either the field's share or shares for its domains, not both")


def _normalise(w: np.ndarray, where: str) -> np.ndarray:
    """Onto the simplex by the one weight check (huge finite shares do not overflow)."""
    if not w.size or w.max() <= 0:
        raise ConfigError(f"{where}: all weights are zero; give at least one domain a positive share")
    try:
        return validate_weights(w, w.size)
    except DataError as err:
        raise ConfigError(f"{where}: {err}") from None


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _number(text: str, where: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"{where}: {what}: {text.strip()!r} is not a number") from None
    if not math.isfinite(v) or v < 0:
        raise ConfigError(f"{where}: {what}: {text.strip()!r} reads as {v}; a share must be a "
                          "finite non-negative number, e.g. 0.3")
    return v
