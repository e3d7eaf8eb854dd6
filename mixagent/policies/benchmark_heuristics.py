"""Zero-tuning heuristics that read the benchmark signals a learned agent sees.

A learned policy only earns its keep if it beats hand heuristics fed the same signals (issue
13). With ``observation.features: [alignment, benchmark_scores]`` the observation carries, per
domain, the gradient cosine of the domain's training loss with each field's benchmark
objective (``align_source``, ``align_target``) and, globally, each field's benchmark score
(``source_benchmark``, ``target_benchmark``). Two rules use them, with defaults fixed a priori
(never tuned on evaluation scenarios):

- :class:`AlignmentHeuristic` (``baseline:alignment``): DoGE-style — weights ∝ prior · exp(β·s)
  with ``s`` the domain's alignment with the balanced score's objective.
- :class:`ODMBenchmark` (``baseline:odm_benchmark``): ODM's EXP3 bandit with the benchmark
  scores' changes as the arms' rewards instead of per-domain losses.

Both need to know how much the balanced score leans on each field. The observation does not
carry the reward's aggregator, but it carries the source, target and balanced scores, and every
aggregator is locally linear in them: ``B = w·S + (1 − w)·T`` for ``mean`` (w = 1/2),
``weighted`` (w = source_weight) and ``min`` (w = 1 on the lagging field, its sub-gradient). So
``w = (B − T)/(S − T)`` read off each observation is the balanced score's local weight on the
source field, exactly, whenever the two fields' scores differ (:func:`balanced_source_weight`);
while they tie (at the base, say) the last estimate stands, 1/2 at first.

Observation columns are picked by name from the layout the observation's shapes imply (v1's
columns first, each optional group's after them in a fixed order), as the agent does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from mixagent.envs.observation import FeatureLayout, observation_layout_of
from mixagent.errors import ConfigError
from mixagent.policies.heuristics import ODM, ODMParams, OnlineParams, OnlineReweighter
from mixagent.policies.protocol import register_policy


def _require(layout: FeatureLayout, group: str, kind: str, why: str) -> None:
    if not getattr(layout, group):
        raise ConfigError(f"baseline:{kind} reads {why}, which this environment does not observe; "
                          f"enable it in the env spec with `observation: {{features: [{group}]}}` "
                          f"(with alignment and benchmark_scores: `features: [alignment, "
                          f"benchmark_scores]`)")


def balanced_source_weight(source: float, target: float, balanced: float,
                           fallback: float) -> float:
    """The balanced score's local weight on the source field, ``(B − T)/(S − T)`` in [0, 1].

    Exact for every aggregator (``mean``: 1/2, ``weighted``: ``source_weight``, ``min``: 1 if the
    source lags, 0 if the target does). ``fallback`` when the fields' scores (nearly) tie, where
    the ratio is undefined or drowned by float32 rounding of the observation."""
    gap = source - target
    if abs(gap) <= 1e-3 * max(abs(source), abs(target)) + 1e-6:
        return fallback
    return float(np.clip((balanced - target) / gap, 0.0, 1.0))


class _FieldWeight:
    """Mixin: the balanced score's weight on the source field, fixed or read off each observation."""

    params: Any
    source_weight_est: float

    def _source_weight(self, glob: np.ndarray, layout: FeatureLayout) -> float:
        if self.params.source_weight is not None:
            return float(self.params.source_weight)
        s, t, b = (float(glob[layout.globals.index(n)])
                   for n in ("source_score", "target_score", "balanced_score"))
        self.source_weight_est = balanced_source_weight(s, t, b, self.source_weight_est)
        return self.source_weight_est


_SOURCE_WEIGHT = Field(
    default=None, ge=0, le=1,
    description="the balanced score's weight on the source field; None: read it off each "
                "observation's scores, (B - T)/(S - T)")


class AlignmentParams(OnlineParams):
    beta: float = Field(default=3.0, ge=0, description="inverse temperature on the alignment")
    smoothing: float = Field(default=0.5, ge=0, lt=1,
                             description="moving average of the alignment across decisions")
    source_weight: float | None = _SOURCE_WEIGHT
    hold_field_shares: bool = Field(
        default=False, description="keep each field's share of the mixture at the prior's and "
        "re-weight only within each field (exp(beta*alignment) normalised per field)")

    written_when_set: ClassVar[tuple[str, ...]] = (*OnlineParams.written_when_set, "hold_field_shares")


@register_policy
class AlignmentHeuristic(_FieldWeight, OnlineReweighter):
    """Follow the per-domain gradient alignment with the balanced score's objective, DoGE-style
    (Fan et al. 2024, "DoGE: Domain Reweighting with Generalization Estimation").

    DoGE up-weights a domain by the inner product of its gradient with the gradient of the
    generalisation objective: ``α ← α·exp(η·⟨∇ℓ_i, ∇L_gen⟩)``. Here the objective is the balanced
    score ``w·S + (1 − w)·T`` and the observation gives each domain's gradient cosine with each
    field's benchmark objective, so the domain's score is ``s_i = w·a_src,i + (1 − w)·a_tgt,i``
    (``w`` from :func:`balanced_source_weight`), smoothed over decisions:
    ``s̄ ← ρ·s̄ + (1 − ρ)·s`` (``s̄ = s`` at the first decision), and the mixture is
    ``w_i ∝ prior_i · exp(β·s̄_i)`` with the prior the ``initial`` mixture.

    Deviations from DoGE: cosines, not raw inner products (the observation's; they are comparable
    across domains, models and steps, which is what makes a fixed β meaningful); the mixture is
    re-derived from the prior each decision rather than accumulated multiplicatively (a
    cumulative update over tens of decisions would run to a corner at any fixed step size, and
    DoGE only uses its average weights anyway); the rule acts online.

    ``hold_field_shares=true``: the tilt acts within each field only — each field keeps the
    prior's share of the mixture (the source share of uniform, say) and its domains share it
    ∝ ``prior_i · exp(β·s̄_i)``. Why: at large β the global rule can put most of the mixture on
    one target domain and starve the source field (the source share fell to 0.30 where uniform
    keeps 0.5, and the source score with it), while which domains *within* a field serve the
    benchmarks is where the alignment signal is informative. The cosines of two fields' domains
    are not compared with each other at all in this mode.

    Defaults, fixed a priori: ``β = 3`` — the env's default action map is ``softmax(3·a)`` with
    ``a ∈ [−1, 1]``, so with cosines in the action's place the heuristic spans exactly the range of
    mixtures the agent's actions span (at most ``e^6`` between two domains); ``ρ = 0.5`` — a
    one-decision half-life: the cosines come from a few sequences per domain and are noisy, and
    a change in them still shows within about three decisions.
    """

    kind = "alignment"
    Params = AlignmentParams
    rule_state = ("score",)

    def start(self) -> None:
        self.prior = self.weights.copy()
        self.score = np.zeros(self.weights.size)
        self.source_weight_est = 0.5

    def _act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        layout = observation_layout_of(obs)
        _require(layout, "alignment", self.kind, "each domain's gradient alignment with the "
                 "fields' benchmark objectives")
        dom = np.asarray(obs["domains"], dtype=np.float64)
        glob = np.asarray(obs["global"], dtype=np.float64)
        a_src = dom[:, layout.domains.index("align_source")]
        a_tgt = dom[:, layout.domains.index("align_target")]
        w = self._source_weight(glob, layout)
        s = w * a_src + (1.0 - w) * a_tgt
        self.t += 1
        rho = self.params.smoothing
        self.score = s if self.t == 1 else rho * self.score + (1.0 - rho) * s
        z = np.log(np.maximum(self.prior, 1e-300)) + self.params.beta * self.score
        if self.params.hold_field_shares:
            assert self.space is not None
            p = np.zeros_like(z)
            for members in (self.space.is_target, ~self.space.is_target):
                if members.any():
                    e = np.exp(z[members] - z[members].max())
                    p[members] = self.prior[members].sum() * e / e.sum()
        else:
            p = np.exp(z - z.max())
        self.weights = p / p.sum()
        self._train_losses = None
        return self.weights.copy()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "source_weight_est": self.source_weight_est}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.source_weight_est = float(state["source_weight_est"])


class ODMBenchmarkParams(ODMParams):
    credit: Literal["auto", "field", "alignment"] = Field(
        default="auto", description="how a field's benchmark change is shared among the arms: "
        "field (its own domains, by weight played), alignment (domains aligned with its "
        "benchmark, by weight played x alignment), auto (alignment when observed, else field)")
    source_weight: float | None = _SOURCE_WEIGHT


@register_policy
class ODMBenchmark(_FieldWeight, ODM):
    """ODM's EXP3 bandit (Albalak et al. 2023, "Efficient Online Data Mixing For Language Model
    Pre-Training") rewarded by the benchmark scores instead of per-domain losses.

    The bandit, its ε schedule, moving average and clock are :class:`ODM`'s; only the reward
    differs. Each decision, each field's benchmark score has changed by ``ΔB_f`` since the last
    one; the balanced score gains ``Σ_f w_f·ΔB_f`` from it (``w_src = w``, ``w_tgt = 1 − w``, see
    :func:`balanced_source_weight`). That change is credited to the arms that were played:
    field ``f``'s share for arm ``i`` is ``c_f,i = π_i·m_f,i / Σ_j π_j·m_f,j`` with ``π`` the
    mixture played and ``m`` the *credit mask* — ``field``: 1 for the field's own domains;
    ``alignment``: ``max(a_f,i, 0)``, the domain's gradient alignment with the field's benchmark
    (a first-order share of who moved it; the field mask when no domain aligns positively).
    The arm's reward is ``r_i = Σ_f w_f·ΔB_f·c_f,i / π_i`` — importance-weighted as EXP3 does,
    so it is the credited gain per unit of the arm played — over the largest ``|ΔB_f|`` seen so
    far in the run, which keeps it in EXP3's ``[−1, 1]`` per unit played whatever the
    benchmark's scale (ODM's losses are nats; benchmark changes are a hundred times smaller and
    would leave ``softmax(ε·R̂)`` uniform). Then ``R̂ ← α·R̂ + (1 − α)·r`` and ODM's mixture.

    Why not credit the balanced change to every arm by how much it was played: importance
    weighting cancels the play (``π_i·ΔB/π_i = ΔB`` for every arm) and nothing is learned. A
    single global signal cannot say which arm caused it; the credit mask is the attribution, and
    its limit is that a field's forgetting is charged to that field's own arms, though it is
    caused by training on the others.
    """

    kind = "odm_benchmark"
    Params = ODMBenchmarkParams

    def start(self) -> None:
        super().start()
        self.source_weight_est = 0.5
        self.prev_benchmarks: np.ndarray | None = None
        self.reward_scale = 0.0

    def _credit(self, dom: np.ndarray, layout: FeatureLayout) -> np.ndarray:
        """``[2, K]``: each field's change shared among the arms (rows sum to 1, or are 0 for a
        field without domains)."""
        assert self.space is not None
        tgt = self.space.is_target
        masks = [(~tgt).astype(np.float64), tgt.astype(np.float64)]
        use_alignment = self.params.credit == "alignment" or (
            self.params.credit == "auto" and layout.alignment)
        if use_alignment:
            _require(layout, "alignment", f"{self.kind}?credit=alignment",
                     "each domain's gradient alignment with the fields' benchmark objectives")
            for f, name in enumerate(("align_source", "align_target")):
                m = np.maximum(dom[:, layout.domains.index(name)], 0.0)
                if (self.weights * m).sum() > 0:
                    masks[f] = m
        out = np.zeros((2, self.weights.size))
        for f, m in enumerate(masks):
            played = self.weights * m
            if played.sum() > 0:
                out[f] = played / played.sum()
        return out

    def _act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        layout = observation_layout_of(obs)
        _require(layout, "benchmark_scores", self.kind, "each field's benchmark score")
        dom = np.asarray(obs["domains"], dtype=np.float64)
        glob = np.asarray(obs["global"], dtype=np.float64)
        bench = glob[[layout.globals.index("source_benchmark"),
                      layout.globals.index("target_benchmark")]]
        w = self._source_weight(glob, layout)
        self.t += 1
        if self.t > 1 and self.prev_benchmarks is not None:
            change = bench - self.prev_benchmarks
            self.reward_scale = max(self.reward_scale, float(np.abs(change).max()))
            gain = (np.array([w, 1.0 - w]) * change / self.reward_scale if self.reward_scale > 0
                    else np.zeros(2))
            r = gain @ self._credit(dom, layout)
            if self.params.importance_weighted:
                r = r / np.maximum(self.weights, 1e-12)
            a = self.params.smoothing
            self.rewards = a * self.rewards + (1.0 - a) * r
            p = self._exp3_mixture()
            self.weights = p / p.sum()
        self.prev_benchmarks = bench
        self._train_losses = None
        return self.weights.copy()

    def state_dict(self) -> dict[str, Any]:
        prev = self.prev_benchmarks
        return {**super().state_dict(), "source_weight_est": self.source_weight_est,
                "prev_benchmarks": None if prev is None else prev.tolist(),
                "reward_scale": self.reward_scale}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.source_weight_est = float(state["source_weight_est"])
        prev = state.get("prev_benchmarks")
        self.prev_benchmarks = None if prev is None else np.asarray(prev, dtype=np.float64)
        if self.prev_benchmarks is not None and self.prev_benchmarks.shape != (2,):
            raise ConfigError(f"{self.kind} state: prev_benchmarks must hold the two fields' "
                              "benchmark scores")
        self.reward_scale = float(state["reward_scale"])
