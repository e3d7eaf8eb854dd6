"""RegMix: regress the score of a static mixture, then pick the best predicted mixture.

Liu et al. 2024, "RegMix: Data Mixture as Regression for Language Model Pre-training": train
many small proxies on random static mixtures, fit a regressor mixture → target metric (LightGBM),
simulate a large number of candidate mixtures and average the top-k predicted ones.

Here the "proxies" are the collected trajectories of an environment: each episode gives one
(mixture, final balanced score) pair. Deviations: trajectories of a random-walk explorer change
their weights every step, so an episode's mixture is its *token-weighted mean* of weights (exact
for static episodes, an approximation otherwise); the regressor is scikit-learn's gradient
boosting (LightGBM is not a dependency); candidates are Dirichlet samples around the token prior
at several concentrations, as in RegMix.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from mixagent.config import StrictModel
from mixagent.data.space import DomainSpace
from mixagent.errors import ConfigError
from mixagent.policies.protocol import register_policy
from mixagent.policies.static import FixedRatio, StaticPolicy

log = logging.getLogger(__name__)


class RegMixParams(StrictModel):
    weights: dict[str, float] = Field(
        default_factory=dict, description="the fitted mixture, by domain name")
    source_share: float | None = Field(
        default=None, ge=0, le=1,
        description="the fitted mixture's source share, used on a space with other domain names")


@register_policy
class RegMix(StaticPolicy):
    """The mixture :func:`fit_regmix` chose; static during a run.

    On the domain space it was fitted on (all names known) it applies the fitted per-domain
    weights; on another space it keeps only what transfers — the source:target ratio — spread
    evenly within each field (a :class:`~mixagent.policies.static.FixedRatio`).
    """

    kind = "regmix"
    Params = RegMixParams

    def __init__(self, params: StrictModel | None = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        p = self.params
        if not p.weights and p.source_share is None:
            raise ConfigError("regmix needs a fitted mixture: fit one with 'mixagent train TRAJ_DIR "
                              "--algo regmix --out DIR' (then use policy:DIR), or pass "
                              "baseline:regmix?source_share=0.3")

    def weights_for(self, space: DomainSpace) -> np.ndarray:
        fitted = self.params.weights
        if fitted and all(n in fitted for n in space.names):
            w = np.array([max(float(fitted[n]), 0.0) for n in space.names])
            if w.sum() > 0:
                return w / w.sum()
        share = self.params.source_share
        if share is None:
            raise ConfigError(f"regmix was fitted on domains {sorted(fitted)} and has no source_share "
                              f"to apply on {list(space.names)}")
        return FixedRatio(source=share).weights_for(space)

    def describe(self) -> str:
        return f"regmix(source={self.params.source_share:.3g})" if self.params.source_share is not None \
            else "regmix"


class RegMixConfig(StrictModel):
    """Settings of :func:`fit_regmix` as one typed config (``train_policy`` with ``algo: regmix``
    validates ``hyperparameters`` into it, so a mistyped key is an error, not ignored)."""

    regressor: Literal["gbm", "linear"] = "gbm"
    num_candidates: int = Field(default=50_000, gt=0)
    top_k: int = Field(default=128, gt=0)
    seed: int = 0


def _candidates(prior: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Dirichlet samples around ``prior`` at concentrations from sparse to near-prior."""
    k = prior.size
    conc = np.exp(rng.uniform(np.log(0.1), np.log(10.0), n))[:, None] * k
    alpha = np.maximum(prior[None, :] * conc, 1e-3)
    g = rng.gamma(alpha)
    g /= g.sum(axis=1, keepdims=True)
    return g


def fit_regmix(mixtures: np.ndarray, scores: Sequence[float], space: DomainSpace, *,
               regressor: Literal["gbm", "linear"] = "gbm", num_candidates: int = 50_000,
               top_k: int = 128, seed: int = 0) -> RegMix:
    """Fit mixture → balanced score on ``(mixtures[i], scores[i])`` and return the chosen mixture.

    The candidate search is restricted to the region the data covers — each domain's weight is
    capped at the largest weight it had in the data — because a tree regressor extrapolates flat
    and would otherwise rate unexplored corners like their nearest explored neighbour.
    """
    x = np.asarray(mixtures, dtype=np.float64)
    y = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != space.num_domains or x.shape[0] != y.size:
        raise ConfigError(f"regmix: mixtures of shape {x.shape} do not match {y.size} scores over "
                          f"{space.num_domains} domains")
    if x.shape[0] < 8:
        raise ConfigError(f"regmix: {x.shape[0]} mixtures are too few to fit a regressor; collect more "
                          "episodes (RegMix used hundreds of proxy runs)")
    rng = np.random.default_rng(seed)
    if regressor == "gbm":
        from sklearn.ensemble import GradientBoostingRegressor

        model: Any = GradientBoostingRegressor(n_estimators=200, max_depth=3, learning_rate=0.05,
                                               subsample=0.8, random_state=seed)
    else:
        from sklearn.linear_model import RidgeCV

        model = RidgeCV(alphas=np.logspace(-4, 2, 13))
    model.fit(x, y)
    tok = np.asarray(space.train_tokens, dtype=np.float64)
    prior = tok / tok.sum() if tok.sum() > 0 else np.full(space.num_domains, 1.0 / space.num_domains)
    cand = np.concatenate([_candidates(prior, num_candidates // 2, rng),
                           _candidates(np.full(space.num_domains, 1.0 / space.num_domains),
                                       num_candidates - num_candidates // 2, rng), x])
    cand = cand[(cand <= x.max(axis=0)[None, :] + 1e-9).all(axis=1)]
    pred = model.predict(cand)
    top = np.argsort(pred)[::-1][: max(1, top_k)]
    w = cand[top].mean(axis=0)
    w /= w.sum()
    share = float(w[~space.is_target].sum())
    pol = RegMix(weights={n: float(v) for n, v in zip(space.names, w, strict=True)}, source_share=share)
    pol.provenance = {"fit": {"episodes": int(x.shape[0]), "regressor": regressor,
                              "candidates": int(cand.shape[0]), "top_k": int(top_k), "seed": seed,
                              "predicted_best": float(pred[top].mean()),
                              "best_observed": float(y.max())},
                      "trained_on": [space.to_dict()]}
    log.info("regmix: fitted on %d mixtures; chosen source share %.3f, predicted balanced %.5f "
             "(best observed %.5f)", x.shape[0], share, pred[top].mean(), y.max())
    return pol


def mixtures_from_episodes(episodes: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(mean weights, final balanced score) per episode from dicts with ``weights`` (T, K) and
    ``final_balanced``; every step trains the same number of tokens, so the mean is
    token-weighted."""
    xs = np.stack([np.asarray(e["weights"], dtype=np.float64).mean(axis=0) for e in episodes])
    ys = np.array([float(e["final_balanced"]) for e in episodes])
    return xs, ys
