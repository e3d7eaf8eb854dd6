"""Source-share schedule shapes: how the source field's share moves over an episode's steps.

One formula for everything that schedules a share: the evaluation layer's
:class:`~mixagent.evaluation.schedules.SourceSchedule` (headroom's dynamic mixtures) and the
trajectories layer's ``mixture`` explorer both call :func:`source_share`, so a two-phase or ramp
schedule an agent saw in its training data is exactly the one headroom measures. It lives here,
in the lowest layer both may import (the import-linter layers contract).

* ``two_phase``: share ``start`` for the first half of the steps, ``end`` from the midpoint on
  (step ``t`` of ``T`` is in the second half when ``t + 0.5 >= T / 2``);
* ``ramp``: linear from ``start`` at the first step to ``end`` at the last
  (``start + (end - start) · t / (T - 1)``).
"""

from __future__ import annotations

#: the dynamic shapes :func:`source_share` knows
SHAPES = ("two_phase", "ramp")


def source_share(shape: str, start: float, end: float, step: int, num_steps: int) -> float:
    """The source share of step ``step`` (0-based) of ``num_steps`` (see the module docstring)."""
    if shape == "two_phase":
        return end if step + 0.5 >= num_steps / 2 else start
    if num_steps <= 1:
        return start
    frac = min(step, num_steps - 1) / (num_steps - 1)
    return start + (end - start) * frac
