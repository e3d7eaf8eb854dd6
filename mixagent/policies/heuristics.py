"""Online re-weighting heuristics from the literature: per-domain losses in, a new mixture out.

Shaped after Mixtera's ``DynamicMixingAlgorithm``: a small base (:class:`OnlineReweighter`)
turns the observation into per-domain loss signals and each rule is a few lines of ``update``.

All three rules were designed for per-domain *training* losses of the batch just trained. The
proxy engine reports only the mean training loss of a step (``info["train_loss"]``), so by
default they read the per-domain *held-out* losses of the observation (measured after every
step, on fixed sequences: less noisy, one step later than the batch losses). A trainer that has
per-domain training losses passes them to :meth:`feedback` (``domain_train_losses``), and the
rules use those instead.

Signals per domain, from the observation: ``loss`` (now), ``base`` (= loss − loss_change_base,
the loss of the pre-trained base) and ``prev`` (= loss − loss_change_step).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from mixagent.config import StrictModel
from mixagent.errors import ConfigError
from mixagent.policies.protocol import MixingPolicy, register_policy
from mixagent.policies.static import field_ratio


class OnlineParams(StrictModel):
    initial: Literal["uniform", "tokens"] = Field(
        default="uniform", description="the mixture of the first step, before any feedback")
    source_share: float | None = Field(
        default=None, ge=0, le=1, description="the source field's share of that first mixture "
        "(each field's domains share its part as 'initial' says); None: the share 'initial' "
        "gives the source field. A rule that measures against its first mixture (the prior) "
        "measures against this one")

    written_when_set: ClassVar[tuple[str, ...]] = ("source_share",)


class OnlineReweighter(MixingPolicy):
    """Base of the online rules: keeps the current mixture and calls :meth:`update` with the
    latest per-domain losses at every decision after the first."""

    weights: np.ndarray
    t: int
    #: the rule's own run-state arrays (beside ``weights``, ``t`` and fed-back losses)
    rule_state: ClassVar[tuple[str, ...]] = ()

    def _reset(self) -> None:
        assert self.space is not None
        k = self.space.num_domains
        if self.params.source_share is not None:
            self.weights = field_ratio(self.space, self.params.source_share, self.params.initial)
        elif self.params.initial == "tokens":
            tok = np.asarray(self.space.train_tokens, dtype=np.float64)
            self.weights = tok / tok.sum() if tok.sum() > 0 else np.full(k, 1.0 / k)
        else:
            self.weights = np.full(k, 1.0 / k)
        self.t = 0
        self._train_losses: np.ndarray | None = None
        self.start()

    def feedback(self, *, train_loss: float | None = None,
                 domain_train_losses: np.ndarray | None = None) -> None:
        if domain_train_losses is not None:
            self._train_losses = np.asarray(domain_train_losses, dtype=np.float64)

    def _act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        dom = np.asarray(obs["domains"], dtype=np.float64)
        self.t += 1
        if self.t > 1:
            loss = dom[:, 1] if self._train_losses is None else self._train_losses
            base = dom[:, 1] - dom[:, 2]
            prev = dom[:, 1] - dom[:, 3]
            w = np.asarray(self.update(loss, base, prev), dtype=np.float64)
            self.weights = w / w.sum()
        self._train_losses = None
        return self.weights.copy()

    def state_dict(self) -> dict[str, Any]:
        """The mixture, the decision count, pending fed-back losses and the rule's estimates."""
        tl = self._train_losses
        return {"weights": self.weights.tolist(), "t": self.t,
                "train_losses": None if tl is None else tl.tolist(),
                **{name: getattr(self, name).tolist() for name in self.rule_state}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        k = self.weights.size
        arrays = {name: np.asarray(state[name], dtype=np.float64)
                  for name in ("weights", *self.rule_state)}
        bad = [name for name, a in arrays.items() if a.shape != (k,)]
        if bad:
            raise ConfigError(f"{self.kind} state: {bad} do not have one entry per domain ({k}); "
                              "load it after reset() on the domain space it was saved on")
        for name, a in arrays.items():
            setattr(self, name, a)
        self.t = int(state["t"])
        tl = state.get("train_losses")
        self._train_losses = None if tl is None else np.asarray(tl, dtype=np.float64)

    def start(self) -> None:
        """Reset rule-specific state (called after ``weights`` and ``t`` are initialised)."""

    def update(self, loss: np.ndarray, base: np.ndarray, prev: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _log_normalise(z: np.ndarray) -> np.ndarray:
    """log of softmax(z), kept finite (a domain's weight may get tiny but never exactly 0)."""
    z = z - z.max()
    return np.maximum(z - np.log(np.exp(z).sum()), -700.0)


def _smooth(alpha: np.ndarray, c: float) -> np.ndarray:
    alpha = alpha / alpha.sum()
    return (1.0 - c) * alpha + c / alpha.size


class DoReMiParams(OnlineParams):
    eta: float = Field(default=10.0, gt=0, description="step size of the exponentiated update")
    smoothing: float = Field(default=1e-3, ge=0, le=1, description="mix-in of uniform (DoReMi's c)")


@register_policy
class DoReMi(OnlineReweighter):
    """DoReMi-style excess-loss re-weighting (Xie et al. 2023, "DoReMi: Optimizing Data Mixtures
    Speeds Up Language Model Pretraining", Algorithm 1).

    ``α ← α · exp(η · max(L − L_ref, 0))``, normalised and smoothed with uniform:
    ``w = (1 − c)·α + c/K``. Deviations: the reference model is the pre-trained base (DoReMi
    trains a separate reference on a default mixture), so the excess loss measures *forgetting*:
    a domain gains weight while its held-out loss is above the base's — source domains being
    forgotten — and no domain gains weight for still being hard. The rule runs online and its
    current weights drive training (DoReMi averages weights over a proxy run and retrains).
    η defaults to 10 per nat because a proxy episode has tens of updates, not DoReMi's thousands.
    """

    kind = "doremi"
    Params = DoReMiParams
    rule_state = ("log_alpha",)

    def start(self) -> None:
        self.log_alpha = np.log(np.maximum(self.weights, 1e-300))

    def update(self, loss: np.ndarray, base: np.ndarray, prev: np.ndarray) -> np.ndarray:
        excess = np.maximum(loss - base, 0.0)
        self.log_alpha = _log_normalise(self.log_alpha + self.params.eta * excess)
        return _smooth(np.exp(self.log_alpha), self.params.smoothing)


class ODMParams(OnlineParams):
    smoothing: float = Field(default=0.9, ge=0, lt=1, description="moving average of rewards (α)")
    importance_weighted: bool = Field(
        default=True, description="divide the reward by the domain's probability (EXP3's estimate)")
    steps_per_decision: int = Field(
        default=10, ge=1, description="bandit steps (ODM: batches) one re-weighting step counts as")


@register_policy
class ODM(OnlineReweighter):
    """Online Data Mixing (Albalak et al. 2023, "Efficient Online Data Mixing For Language Model
    Pre-Training"): the EXP3 bandit with each domain's loss as its reward.

    Reward estimate ``R̂_i ← α·R̂_i + (1 − α)·L_i/π_i``; policy ``π = (1 − K·ε_t)·softmax(ε_{t−1}·R̂)
    + ε_t`` with ``ε_t = min(1/K, sqrt(ln K / (K·t)))``. Deviations: ODM samples one domain per
    batch and only that arm's reward is seen; here every domain's loss is observed at every
    re-weighting step (the held-out loss, or the per-domain training loss if fed back), and all
    arms are updated — still importance-weighted by default, which makes the weights drift
    towards proportional-to-loss. The mixture is returned instead of a sampled domain. ODM's
    clock ``t`` counts batches, and ``ε_t`` stays at 1/K (pure exploration, i.e. uniform) until
    ``t ≳ K·ln K``; one re-weighting step covers many batches, so ``t`` advances by
    ``steps_per_decision`` per decision.
    """

    kind = "odm"
    Params = ODMParams
    rule_state = ("rewards",)

    def start(self) -> None:
        self.rewards = np.zeros(self.weights.size)

    def _eps(self, t: int) -> float:
        k = self.weights.size
        return min(1.0 / k, math.sqrt(math.log(max(k, 2)) / (k * max(t, 1))))

    def update(self, loss: np.ndarray, base: np.ndarray, prev: np.ndarray) -> np.ndarray:
        a = self.params.smoothing
        r = loss / np.maximum(self.weights, 1e-12) if self.params.importance_weighted else loss
        self.rewards = a * self.rewards + (1.0 - a) * r
        return self._exp3_mixture()

    def _exp3_mixture(self) -> np.ndarray:
        """EXP3's mixture from the reward estimates ``R̂`` (``self.rewards``) at decision ``t``."""
        step = (self.t - 1) * self.params.steps_per_decision  # bandit steps with feedback so far
        z = self._eps(step - self.params.steps_per_decision) * self.rewards
        p = np.exp(z - z.max())
        p /= p.sum()
        eps = self._eps(step)
        return (1.0 - p.size * eps) * p + eps


class VelocituneParams(OnlineParams):
    eta: float = Field(default=2.0, gt=0, description="step size of the exponentiated update")
    target_reduction: float = Field(
        default=0.1, gt=0, lt=1,
        description="each domain's target loss is (1 - target_reduction) x its base loss")
    smoothing: float = Field(default=1e-3, ge=0, le=1)


@register_policy
class Velocitune(OnlineReweighter):
    """Velocitune-style learning-velocity re-weighting (Luo et al. 2024, "Velocitune: A
    Velocity-based Dynamic Domain Reweighting Method for Continual Pre-training").

    Learning velocity ``V_i = (L_i − L*_i) / (L0_i − L*_i)`` (1 = no progress towards the target
    loss, 0 = reached it); domains that learn slowly are up-weighted by ``α ← α·exp(η·V)``,
    normalised and smoothed with uniform. Deviations: Velocitune fits each domain's target
    loss ``L*`` with a scaling law from extra proxy runs; here ``L* = (1 − target_reduction)·L0``
    with ``L0`` the base's loss, so a forgotten source domain (``V > 1``) gains weight fastest.
    The update uses DoReMi's exponentiated form rather than re-deriving the paper's schedule.
    """

    kind = "velocitune"
    Params = VelocituneParams
    rule_state = ("log_alpha",)

    def start(self) -> None:
        self.log_alpha = np.log(np.maximum(self.weights, 1e-300))

    def update(self, loss: np.ndarray, base: np.ndarray, prev: np.ndarray) -> np.ndarray:
        target = (1.0 - self.params.target_reduction) * base
        v = np.clip((loss - target) / np.maximum(base - target, 1e-9), 0.0, 10.0)
        self.log_alpha = _log_normalise(self.log_alpha + self.params.eta * v)
        return _smooth(np.exp(self.log_alpha), self.params.smoothing)
