"""The action map: a vector in ``[-1, 1]^K`` → domain weights on the probability simplex.

    w = (1 - K·floor) · softmax(scale · a) + floor

* ``softmax(scale·a)`` makes every action a valid mixture and every mixture with weights
  ratio at most ``exp(2·scale)`` reachable; ``scale = 3`` (default) spans ratios up to ~400,
  enough to express "almost only the target field" while a policy's Gaussian noise around 0 still
  means "roughly uniform".
* the floor mixes in ``floor`` per domain so no domain is ever starved (``K·floor < 1``).
* a *policy* keeps the floor of the env it was trained on but acts on any number of domains, so
  its floor must be feasible for every K: :func:`policy_floor` caps it at ``FLOOR_CAP/K``
  (``0.5/K``: at most half of the mass is fixed, half is the policy's choice). A floor of 0.002
  is unchanged up to K = 250 and stays valid beyond, where ``K·0.002 ≥ 1`` would otherwise leave
  nothing (or less than nothing) for the softmax. The env itself checks its floor against its K
  when the spec is resolved and applies it as given.
* softmax is shift-invariant, so :func:`action_from_weights` (the inverse) picks the action whose
  logit range is centred on 0; a mixture whose weight ratio exceeds ``exp(2·scale)`` (or with a
  weight below the floor) is not reachable and is clipped to the nearest reachable action, or is
  an error with ``strict=True``.

Baselines, trajectory collection, the learned agent and the CPT integration share these
functions (the agent's differentiable torch copy,
:func:`mixagent.policies.network.weights_from_actions`, is tested equal to
:func:`weights_from_action`), so weights mean the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence, Sized
from typing import Any

import numpy as np

from mixagent.data.sampler import real_vector, validate_weights
from mixagent.envs.errors import InvalidActionError
from mixagent.errors import DataError


def check_action(action: object, num_domains: int) -> np.ndarray:
    """The action as float64 ``(K,)`` clipped to [-1, 1]; anything but K finite real numbers is
    an :class:`InvalidActionError` that says what was given.

    Values outside [-1, 1] are clipped, as Gymnasium and SB3 expect of a bounded ``Box`` (a
    Gaussian policy's samples overshoot).
    """
    try:
        return np.clip(real_vector(action, num_domains, "action"), -1.0, 1.0)
    except DataError as err:
        raise InvalidActionError(str(err)) from None


def check_weights(weights: object, num_domains: int,
                  names: Sequence[str] | None = None) -> np.ndarray:
    """Exact domain weights as float64 ``(K,)`` on the simplex, or :class:`InvalidActionError`.

    The checks are the sampler's (:func:`~mixagent.data.sampler.validate_weights`: real numbers
    only, non-negative, rescaled by the maximum before summing so ``1e308`` works), raised as the
    environment's own error so a caller of ``step_weights`` catches one error type.
    """
    try:
        return validate_weights(weights, num_domains, names)
    except DataError as err:
        raise InvalidActionError(str(err)) from None


#: a policy's floor may fix at most this share of the mass (see :func:`policy_floor`)
FLOOR_CAP = 0.5


def policy_floor(floor: float, num_domains: Any) -> Any:
    """The floor a policy applies on ``num_domains`` domains: ``min(floor, FLOOR_CAP/K)``.

    Why: a policy carries the floor of the env it was trained on to spaces of any size
    (transfer), where that floor may be infeasible (``K·floor ≥ 1``); see the module doc.
    ``num_domains`` is an int, or an array / torch tensor of per-row K (the batched torch map).
    """
    cap = FLOOR_CAP / num_domains
    return min(floor, cap) if np.isscalar(cap) else cap.clip(max=floor)


def weights_from_action(action: Sequence[float] | np.ndarray, scale: float,
                        floor: float = 0.0) -> np.ndarray:
    """Map an action in ``[-1, 1]^K`` to domain weights (float64, sums to 1); see module doc.

    A floor with ``K·floor ≥ 1`` is an :class:`InvalidActionError`: it would give negative
    weights (a policy passes its floor through :func:`policy_floor` first).
    """
    a = check_action(action, _length(action))
    if a.size * floor >= 1.0:
        raise InvalidActionError(f"action floor {floor} × {a.size} domains must be below 1")
    z = scale * a
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    return (1.0 - a.size * floor) * p + floor


def action_from_weights(weights: Sequence[float] | np.ndarray, scale: float, floor: float = 0.0,
                        *, strict: bool = False) -> np.ndarray:
    """The centred action (float32) whose mapped weights are ``weights`` (normalised first).

    Unreachable mixtures are clipped to the nearest reachable action (or raise
    :class:`InvalidActionError` when ``strict``).
    """
    w = check_weights(weights, _length(weights))
    k = w.size
    p = (w - floor) / (1.0 - k * floor)
    if strict and (p <= 0).any():
        raise InvalidActionError(f"weights {w.tolist()} put a domain at or below the floor "
                                 f"{floor}; such a mixture is not reachable")
    z = np.log(np.clip(p, 1e-300, None)) / scale
    lo, hi = z.min(), z.max()
    if strict and hi - lo > 2.0 + 1e-9:
        raise InvalidActionError(
            f"weights {w.tolist()} have a ratio of {np.exp(scale * (hi - lo)):.3g} between "
            f"domains; the action map reaches at most exp(2·{scale}) = {np.exp(2 * scale):.3g}")
    # centre the logit range on 0; if it is too wide keep the largest weights exact, clip the rest
    z = z - ((hi - 1.0) if hi - lo > 2.0 else (hi + lo) / 2.0)
    return np.clip(z, -1.0, 1.0).astype(np.float32)


def _length(values: object) -> int:
    """The K to check a vector against when the caller gives none (its first axis, else 1)."""
    if isinstance(values, str | bytes):
        return 1
    try:
        shape = np.shape(values)
    except (TypeError, ValueError):  # ragged nesting: the check then reports what was given
        return len(values) if isinstance(values, Sized) else 1
    return int(shape[0]) if shape else 1
