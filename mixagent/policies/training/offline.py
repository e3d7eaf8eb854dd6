"""Offline training of the mixing agent on trajectories: behaviour cloning, then CQL.

Read top to bottom (CleanRL style): the typed config, the data split, the networks, the BC warm
start, the CQL loop, checkpoints. As in the Data Mixing Agent paper, the agent learns from
collected trajectories with Conservative Q-Learning (Kumar et al. 2020, "Conservative Q-Learning
for Offline Reinforcement Learning", CQL(H) with importance-sampled logsumexp), here in plain
torch — LIBRARY-FACTS explains why not d3rlpy or RLlib.

1. **Split by episode** into train/validation (``val_fraction``), so no episode leaks.
2. **BC warm start**: the actor (tanh-Gaussian over per-domain actions) maximises the likelihood
   of the actions of the best episodes (top ``bc_top_quantile``, main path only), ranked by
   return net of what the episode's scenario predicts (``bc_rank``; on a scenario family the
   budget and field move returns more than the mixture does). ``data_fraction`` trains on a
   nested share of the episodes (a learning curve).
3. **CQL** (``algo: cql``): twin Q-networks with Polyak-averaged targets; the TD target uses
   the current policy's next action (with SAC's entropy bonus only if ``backup_entropy``, off
   by default as in CORL's CQL); the conservative term pushes
   down ``logsumexp`` of Q over sampled actions (uniform, current policy at s and at s') and
   pushes up Q on the data's actions. The actor maximises ``min Q − α·log π`` plus
   ``bc_weight`` × the data log-likelihood (keeps it near the data, as tiny datasets need);
   the entropy temperature α is tuned to ``target_entropy_per_domain`` × K.
4. **Validation and early stopping**: every ``eval_every`` steps the validation loss (BC: NLL;
   CQL: the TD error of the validation transitions under the current policy) is measured; the
   best actor is kept and training stops after ``patience`` evaluations without improvement.
   With ``selection`` (:mod:`.selection`), the policy kept is instead the one with the best
   mean final balanced score on held-out scenarios of a scenario family — the BC warm start's
   and then CQL's every ``selection.every`` steps and at the end — never the TD error (issue
   13: the TD error says how well the critic fits, not how well the agent mixes); TD early
   stopping is then off (``selection.patience`` stops on the held-out score instead), and
   every candidate's score goes into the provenance (``selection``).
5. **Checkpoints** in the policy format every ``checkpoint_every`` steps of each phase under
   ``OUT/checkpoints/{bc,cql}-STEP`` (the last ``keep_checkpoints``); the best policy in ``OUT``.

Rewards are divided by their standard deviation on the training split (recorded in the
provenance), so Q-values are O(1) whatever the env's reward scale.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from mixagent.config import StrictModel
from mixagent.policies.agent import AgentParams, MixingAgent
from mixagent.policies.features import IS_TARGET_COLUMN, FeatureSpec
from mixagent.policies.network import ActorNet, CriticNet, NetworkConfig
from mixagent.policies.training.data import TransitionData, context_matrix
from mixagent.policies.training.selection import HeldOutSelector, SelectionConfig

log = logging.getLogger(__name__)


class OfflineConfig(StrictModel):
    """Hyper-parameters of offline training (every one is recorded in the policy's provenance)."""

    algo: Literal["bc", "cql"] = "cql"
    seed: int = 0
    features: FeatureSpec = Field(default_factory=FeatureSpec)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    action_scale: float = Field(default=3.0, gt=0, description="the env's action.scale")
    floor: float = Field(default=0.0, ge=0, lt=1, description="least weight per domain when acting")
    val_fraction: float = Field(default=0.2, ge=0, lt=1)
    data_fraction: float = Field(
        default=1.0, gt=0, le=1,
        description="share of the training episodes used, a seeded prefix of one permutation "
                    "(so 0.25 is inside 0.5 for one seed) taken after the validation split: the "
                    "x-axis of a learning curve, with validation and held-out data unchanged")
    batch_size: int = Field(default=256, gt=0)
    # behaviour cloning
    bc_top_quantile: float = Field(default=0.5, gt=0, le=1, description="share of episodes cloned")
    bc_rank: Literal["residual", "return", "scenario"] = Field(
        default="residual",
        description="rank episodes for cloning by return net of what their scenario predicts "
                    "(a ridge fit of return on the scenario choices: a scenario family's budgets "
                    "and fields move returns more than any mixture does), or by raw return; "
                    "the same ranking on a single-scenario collection. scenario: within each "
                    "scenario collected more than once (a family with `repeats`), by return "
                    "minus the scenario's mean, cloning the top quantile of every such scenario; "
                    "episodes of scenarios collected once are not cloned")
    bc_steps: int = Field(default=1500, ge=0)
    bc_lr: float = Field(default=1e-3, gt=0)
    # CQL
    cql_steps: int = Field(default=10_000, ge=0)
    actor_lr: float = Field(default=1e-4, gt=0)
    critic_lr: float = Field(default=3e-4, gt=0)
    gamma: float = Field(default=0.99, ge=0, le=1)
    tau: float = Field(default=0.005, gt=0, le=1)
    cql_alpha: float = Field(default=1.0, ge=0, description="weight of the conservative penalty")
    cql_samples: int = Field(default=4, gt=0, description="sampled actions per kind and state")
    cql_states: int = Field(default=64, gt=0,
                            description="states of each batch the conservative term is estimated on")
    cql_temperature: float = Field(default=1.0, gt=0)
    target_entropy_per_domain: float = -1.0
    backup_entropy: bool = Field(default=False, description="entropy bonus in the TD target (SAC); "
                                 "off as in CORL's CQL: with few steps per episode it dominates rewards")
    bc_weight: float = Field(default=0.1, ge=0, description="data log-likelihood in the actor loss")
    weight_decay: float = Field(default=1e-4, ge=0)
    # validation, checkpoints
    eval_every: int = Field(default=250, gt=0)
    patience: int = Field(default=8, gt=0, description="evaluations without improvement")
    checkpoint_every: int = Field(default=2500, gt=0)
    keep_checkpoints: int = Field(default=3, ge=0)
    selection: SelectionConfig | None = Field(
        default=None, description="select the policy by its held-out family score (not TD)")


@dataclass
class OfflineResult:
    """The trained agent and what happened."""

    agent: MixingAgent
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def _repeated_scenarios(data: TransitionData, episodes: np.ndarray) -> list[np.ndarray]:
    """Positions in ``episodes`` of each scenario that occurs more than once among them
    (a family collected with ``repeats``); episodes outside a family have no scenario."""
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(episodes):
        name = data.scenarios[int(e)] if data.scenarios else ""
        if name:
            groups.setdefault(name, []).append(i)
    return [np.asarray(g) for g in groups.values() if len(g) > 1]


def _scenario_groups(data: TransitionData, episodes: np.ndarray) -> list[np.ndarray]:
    """Positions in ``episodes`` in the groups a split or a share takes whole: each repeated
    scenario, then every other episode on its own (in order, so without repeats a seeded
    permutation of the groups is one of the episodes)."""
    repeated = _repeated_scenarios(data, episodes)
    grouped = np.zeros(len(episodes), bool)
    for g in repeated:
        grouped[g] = True
    return repeated + [np.asarray([i]) for i in np.flatnonzero(~grouped)]


def split_by_episode(data: TransitionData, val_fraction: float, seed: int
                     ) -> tuple[TransitionData, TransitionData | None]:
    """Train/validation split by episode (a seeded permutation of episode indices).

    Episodes of a scenario collected more than once (a family with ``repeats``) stay on one
    side, whole scenarios in a seeded order until the validation share is reached: a
    validation episode whose scenario siblings are trained on is not held out."""
    n_ep = len(data.episodes)
    n_val = round(val_fraction * n_ep)
    if n_val == 0 or n_ep - n_val < 1:
        return data.subset(np.arange(len(data))), None
    val_eps = np.zeros(n_ep, bool)
    order = _scenario_groups(data, np.arange(n_ep))
    taken = 0
    for g in np.random.default_rng(seed).permutation(len(order)):
        if taken >= n_val or n_ep - taken - len(order[g]) < 1:
            break
        val_eps[order[g]] = True
        taken += len(order[g])
    is_val = val_eps[data.episode]
    return data.subset(np.flatnonzero(~is_val)), data.subset(np.flatnonzero(is_val))


def episode_prefix(data: TransitionData, fraction: float, seed: int) -> TransitionData:
    """The transitions of the first ``fraction`` of ``data``'s episodes in a seeded permutation
    (at least one episode): nested across fractions for one seed.

    A scenario collected several times (``repeats``) is taken whole, in the permutation's order
    of groups: a random quarter of single episodes would leave most scenarios with one episode,
    which ``bc_rank: scenario`` cannot rank, so the curve would measure the lost pairing, not
    the data. The share is then reached to within one scenario's episodes."""
    eps = np.unique(data.episode)
    want = max(1, round(fraction * eps.size))
    order = _scenario_groups(data, eps)
    taken: list[int] = []
    for g in np.random.default_rng([seed, 1]).permutation(len(order)):
        if len(taken) >= want:
            break
        taken += eps[order[g]].tolist()
    keep = np.asarray(taken)
    return data.subset(np.flatnonzero(np.isin(data.episode, keep)))


def _tensors(d: TransitionData, idx: np.ndarray | None = None, k: int | None = None
             ) -> dict[str, torch.Tensor]:
    """Batch tensors of the rows ``idx``, padded only to ``k`` domains (default: all of ``d``'s
    padding); the networks mask padding, so trimming it changes no row's result."""
    sel = slice(None) if idx is None else idx
    ks = slice(None) if k is None else slice(0, k)
    return {
        "dom": torch.from_numpy(d.dom[sel][:, ks]), "glob": torch.from_numpy(d.glob[sel]),
        "mask": torch.from_numpy(d.mask[sel][:, ks]), "act": torch.from_numpy(d.actions[sel][:, ks]),
        "rew": torch.from_numpy(d.rewards[sel]), "dom2": torch.from_numpy(d.dom2[sel][:, ks]),
        "glob2": torch.from_numpy(d.glob2[sel]), "done": torch.from_numpy(d.dones[sel]),
    }


class _Batches:
    """Minibatches drawn from rows grouped by domain count, each padded only to its group's
    largest K. On a scenario family (K from 2 to ~40 in one data set) padding every batch to
    the largest K wastes most of the per-domain compute; grouped batches are still unbiased
    over steps (a group is drawn with probability ∝ its size). One group when every row has
    the same K, and then the draws are plain uniform ones."""

    def __init__(self, d: TransitionData, rows: np.ndarray, batch_size: int, max_groups: int = 8):
        rows = np.asarray(rows)
        k = d.mask[rows].sum(1)
        order = rows[np.argsort(k, kind="stable")]
        groups = max(1, min(max_groups, len(rows) // (2 * batch_size)))
        if np.unique(k).size == 1:
            groups = 1
        self.groups = [g for g in np.array_split(order, groups) if len(g)]
        self.k = [int(d.mask[g].sum(1).max()) for g in self.groups]
        sizes = np.array([len(g) for g in self.groups], float)
        self.p = sizes / sizes.sum()
        self.data, self.size = d, min(batch_size, len(rows))

    def draw(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        j = int(rng.choice(len(self.groups), p=self.p)) if len(self.groups) > 1 else 0
        return _tensors(self.data, rng.choice(self.groups[j], self.size), self.k[j])


def _bc_loss(actor: ActorNet, b: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean negative log-likelihood of the data actions, per domain."""
    k = b["mask"].float().sum(-1)
    return (-actor.log_prob(b["dom"], b["glob"], b["act"], b["mask"]) / k).mean()


def episode_merit(data: TransitionData, episodes: np.ndarray, rank: str = "residual",
                  ridge: float = 1e-2) -> np.ndarray:
    """What ranks ``episodes`` for cloning: their return, or (``residual``) their return minus a
    ridge regression of return on their scenario choices fitted on these episodes — so a
    mediocre mixture on an easy scenario does not outrank a good one on a hard scenario — or
    (``scenario``) their return minus the mean return of the episodes of the same scenario
    among ``episodes`` (NaN for a scenario that occurs once).

    Why ``scenario``: the choices a ridge fit sees do not say which domains a random subset
    kept, and on family-v2 that leaves a residual sd of ~0.7 return units per episode against
    mixture effects of ~0.1–0.3, so a ranking across scenarios is mostly noise. Within one
    scenario only the mixing and the seeds differ (seed sd ~0.01–0.05 units)."""
    rets = data.returns[episodes].astype(np.float64)
    if rank == "scenario":
        out = np.full(len(rets), np.nan)
        for idx in _repeated_scenarios(data, episodes):
            out[idx] = rets[idx] - rets[idx].mean()
        return out
    if rank == "return" or not data.contexts:
        return rets
    x = context_matrix([data.contexts[int(e)] for e in episodes])
    x = x[:, x.std(0) > 0] if len(x) else x
    if x.shape[1] == 0:
        return rets - rets.mean()
    x = (x - x.mean(0)) / x.std(0)
    y = rets - rets.mean()
    beta = np.linalg.solve(x.T @ x + ridge * len(y) * np.eye(x.shape[1]), x.T @ y)
    return y - x @ beta


def _top_episodes(data: TransitionData, quantile: float, rank: str = "residual") -> np.ndarray:
    """Indices of main-path transitions of the episodes whose merit (:func:`episode_merit`) is in
    the top quantile."""
    present = np.unique(data.episode)
    rets = episode_merit(data, present, rank)
    if rank == "scenario":
        repeated = _repeated_scenarios(data, present)
        if not repeated:
            log.warning("bc_rank: scenario, but no scenario occurs twice among these %d "
                        "episodes (collect with a family's `repeats`); ranking by residual",
                        len(present))
            return _top_episodes(data, quantile, "residual")
        keep_eps: list[int] = []
        for grp in repeated:
            cut = np.quantile(rets[grp], 1.0 - quantile) if quantile < 1 else -np.inf
            keep_eps += present[grp[rets[grp] >= cut]].tolist()
        keep = set(keep_eps)
    else:
        cut = np.quantile(rets, 1.0 - quantile) if quantile < 1 else -np.inf
        keep = set(present[rets >= cut].tolist())
    return np.flatnonzero(np.isin(data.episode, list(keep)) & data.on_path)


def _masked_uniform(mask: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand((n, *mask.shape), generator=gen) * 2 - 1
    return (u * mask.float()).reshape(n * mask.shape[0], mask.shape[1])


def _rep(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.unsqueeze(0).expand(n, *x.shape).reshape(n * x.shape[0], *x.shape[1:])


def _soft_update(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.lerp_(s, tau)


def _log_every(eval_every: int, steps: int) -> int:
    """A log line (off a terminal) about every tenth of a phase, on a validation step, whose
    numbers it then shows."""
    return eval_every * max(1, steps // 10 // eval_every)


def make_agent(actor: ActorNet, cfg: OfflineConfig) -> MixingAgent:
    params = AgentParams(features=cfg.features, network=cfg.network, action_scale=cfg.action_scale,
                         floor=cfg.floor, squash="tanh", deterministic=True)
    return MixingAgent(params, actor=copy.deepcopy(actor).eval())


def train_offline(data: TransitionData, cfg: OfflineConfig, out: Path | None = None, *,
                  progress: bool | None = None, provenance: dict[str, Any] | None = None,
                  selector: HeldOutSelector | None = None) -> OfflineResult:
    """Train an agent on ``data``; writes checkpoints under ``out/checkpoints`` if ``out``.

    ``selector`` (built from ``cfg.selection`` by the caller, which knows the training
    collections to keep out): pick the policy by its held-out family score instead of by
    validation loss (module docstring, step 4)."""
    from mixagent.utils.progress import Progress

    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train, val = split_by_episode(data, cfg.val_fraction, cfg.seed)
    if cfg.data_fraction < 1.0:
        train = episode_prefix(train, cfg.data_fraction, cfg.seed)
    reward_scale = float(train.rewards.std()) or 1.0
    train.rewards = train.rewards / reward_scale
    if val is not None:
        val.rewards = val.rewards / reward_scale
    fd, fg = train.dom.shape[-1], train.glob.shape[-1]
    actor = ActorNet(fd, fg, cfg.network, IS_TARGET_COLUMN)
    actor.norm.fit(np.concatenate([train.dom, train.dom2]), np.concatenate([train.glob, train.glob2]),
                   np.concatenate([train.mask, train.mask]))
    stats = actor.norm.stats()
    prov = dict(provenance or {})
    prov.setdefault("training", {})
    prov["training"].update({"algo": cfg.algo, "transitions": len(train),
                             "validation_transitions": len(val) if val is not None else 0,
                             "episodes": len(np.unique(train.episode)), "reward_scale": reward_scale})
    prov["hyperparameters"] = cfg.model_dump(mode="json")
    prov.setdefault("trained_on", [s.to_dict() for s in data.spaces])
    history: list[dict[str, float]] = []
    ckpts: list[Path] = []

    def checkpoint(phase: str, step: int, a: ActorNet) -> None:
        if out is None or cfg.keep_checkpoints == 0:
            return
        agent = make_agent(a, cfg)
        agent.provenance = {**prov, "checkpoint": {"phase": phase, "step": step}}
        path = agent.save(out / "checkpoints" / f"{phase}-{step:07d}")
        ckpts.append(path)
        while len(ckpts) > cfg.keep_checkpoints:
            import shutil

            shutil.rmtree(ckpts.pop(0), ignore_errors=True)

    # -- 1. behaviour cloning warm start ---------------------------------------------------------
    bc_idx = _top_episodes(train, cfg.bc_top_quantile, cfg.bc_rank)
    val_bc = (_tensors(val, _top_episodes(val, cfg.bc_top_quantile, cfg.bc_rank))
              if val is not None else None)
    bc_batches = _Batches(train, bc_idx, cfg.batch_size)
    opt = torch.optim.AdamW(actor.parameters(), lr=cfg.bc_lr, weight_decay=cfg.weight_decay)
    best_val, best_state, bad, step = np.inf, copy.deepcopy(actor.state_dict()), 0, 0
    # log lines (off a terminal) at the validation points, where the postfix is fresh
    with Progress(cfg.bc_steps, "behaviour cloning", "step", progress=progress, logger=log,
                  log_every=_log_every(cfg.eval_every, cfg.bc_steps), log_seconds=30.0) as bar:
        for step in range(1, cfg.bc_steps + 1):
            b = bc_batches.draw(rng)
            loss = _bc_loss(actor, b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(actor.parameters(), 1.0)
            opt.step()
            if step % cfg.eval_every == 0 or step == cfg.bc_steps:
                with torch.no_grad():
                    v = float(_bc_loss(actor, val_bc)) if val_bc is not None and len(val_bc["rew"]) else loss.item()
                history.append({"phase": 0.0, "step": float(step), "bc_loss": loss.item(), "val_bc_loss": v})
                bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{v:.3f}")
                if v < best_val - 1e-4:
                    best_val, best_state, bad = v, copy.deepcopy(actor.state_dict()), 0
                else:
                    bad += 1
                    if bad >= cfg.patience:
                        log.info("behaviour cloning: early stop at step %d (best val NLL %.4f)", step, best_val)
                        bar.update(1)
                        break
            bar.update(1)  # after the postfix, so a log line shows this step's numbers
            if step % cfg.checkpoint_every == 0:
                checkpoint("bc", step, actor)
    actor.load_state_dict(best_state)
    best = {"phase": "bc", "val_bc_loss": float(best_val)}
    # held-out selection: the candidates' scores, the best one's state (the BC warm start first)
    sel_best: dict[str, Any] = {}
    sel_state = copy.deepcopy(actor.state_dict())

    def select(phase: str, step: int) -> bool:
        """Score the current actor on the held-out scenarios; True if it is the best so far."""
        nonlocal sel_best, sel_state
        assert selector is not None
        score = selector.score(make_agent(actor, cfg), {"phase": phase, "step": step})
        history.append({"phase": 0.0 if phase == "bc" else 1.0, "step": float(step),
                        "heldout_score": score})
        if not sel_best or score > sel_best["heldout_score"] + 1e-9:
            sel_best = {"phase": phase, "step": step, "heldout_score": score}
            sel_state = copy.deepcopy(actor.state_dict())
            return True
        return False

    def finish(a: ActorNet, fallback: dict[str, Any]) -> OfflineResult:
        chosen = fallback
        if selector is not None:
            a.load_state_dict(sel_state)
            chosen = {**sel_best, "criterion": "heldout_score"}
            prov["selection"] = selector.record(chosen)
        agent = make_agent(a, cfg)
        agent.provenance = {**prov, "best": chosen}
        return OfflineResult(agent, history, chosen, time.perf_counter() - t_start)

    if selector is not None:
        select("bc", step)
    if cfg.algo == "bc" or cfg.cql_steps == 0:
        return finish(actor, best)

    # -- 2. CQL ----------------------------------------------------------------------------------
    q1, q2 = (CriticNet(fd, fg, cfg.network, IS_TARGET_COLUMN, cfg.action_scale) for _ in range(2))
    for q in (q1, q2):
        q.norm.set_stats(stats)
    q1_t, q2_t = copy.deepcopy(q1), copy.deepcopy(q2)
    q_opt = torch.optim.AdamW([*q1.parameters(), *q2.parameters()], lr=cfg.critic_lr,
                              weight_decay=cfg.weight_decay)
    pi_opt = torch.optim.AdamW(actor.parameters(), lr=cfg.actor_lr, weight_decay=cfg.weight_decay)
    log_alpha = torch.zeros((), requires_grad=True)
    a_opt = torch.optim.Adam([log_alpha], lr=cfg.actor_lr)
    n = cfg.cql_samples
    val_t = _tensors(val) if val is not None and len(val) else None
    cql_batches = _Batches(train, np.arange(len(train)), cfg.batch_size)

    def critic_losses(b: dict[str, torch.Tensor], alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            a2, logp2 = actor.sample(b["dom2"], b["glob2"], b["mask"], gen)
            q_next = torch.minimum(q1_t(b["dom2"], b["glob2"], a2, b["mask"]),
                                   q2_t(b["dom2"], b["glob2"], a2, b["mask"]))
            if cfg.backup_entropy:
                q_next = q_next - alpha * logp2
            y = b["rew"] + cfg.gamma * (1 - b["done"]) * q_next
        qd1, qd2 = q1(b["dom"], b["glob"], b["act"], b["mask"]), q2(b["dom"], b["glob"], b["act"], b["mask"])
        td = ((qd1 - y) ** 2).mean() + ((qd2 - y) ** 2).mean()
        # conservative penalty: logsumexp over sampled actions minus the data action's Q
        bsz = min(cfg.cql_states, b["rew"].shape[0])  # the first states of a random batch
        dom_r, glob_r, mask_r = _rep(b["dom"][:bsz], n), _rep(b["glob"][:bsz], n), _rep(b["mask"][:bsz], n)
        with torch.no_grad():
            a_rand = _masked_uniform(b["mask"][:bsz], n, gen)
            logp_rand = -mask_r.float().sum(-1) * np.log(2.0)
            a_cur, logp_cur = actor.sample(dom_r, glob_r, mask_r, gen)
            a_nxt, logp_nxt = actor.sample(_rep(b["dom2"][:bsz], n), _rep(b["glob2"][:bsz], n), mask_r, gen)
        gap = torch.zeros(())
        for q, qd in ((q1, qd1[:bsz]), (q2, qd2[:bsz])):
            cat = torch.stack([q(dom_r, glob_r, a_rand, mask_r) - logp_rand,
                               q(dom_r, glob_r, a_cur, mask_r) - logp_cur,
                               q(dom_r, glob_r, a_nxt, mask_r) - logp_nxt], dim=0)  # (3, n·B)
            cat = cat.reshape(3, n, bsz).permute(2, 0, 1).reshape(bsz, 3 * n)
            lse = torch.logsumexp(cat / cfg.cql_temperature, dim=1) * cfg.cql_temperature
            gap = gap + (lse - qd).mean()
        return td, gap

    best_val, best_state, bad = np.inf, copy.deepcopy(actor.state_dict()), 0
    sel_every = cfg.selection.every if cfg.selection is not None else 0
    sel_patience = cfg.selection.patience if cfg.selection is not None else 0
    sel_bad = 0
    with Progress(cfg.cql_steps, "CQL", "step", progress=progress, logger=log,
                  log_every=_log_every(cfg.eval_every, cfg.cql_steps), log_seconds=30.0) as bar:
        for step in range(1, cfg.cql_steps + 1):
            b = cql_batches.draw(rng)
            alpha = log_alpha.exp().detach()
            td, gap = critic_losses(b, alpha)
            q_loss = td + cfg.cql_alpha * gap
            q_opt.zero_grad(set_to_none=True)
            q_loss.backward()
            torch.nn.utils.clip_grad_norm_([*q1.parameters(), *q2.parameters()], 10.0)
            q_opt.step()
            # actor: maximise min Q - alpha log pi, plus the data log-likelihood
            a_pi, logp_pi = actor.sample(b["dom"], b["glob"], b["mask"], gen)
            q_pi = torch.minimum(q1(b["dom"], b["glob"], a_pi, b["mask"]), q2(b["dom"], b["glob"], a_pi, b["mask"]))
            pi_loss = (alpha * logp_pi - q_pi).mean()
            if cfg.bc_weight > 0:
                pi_loss = pi_loss + cfg.bc_weight * _bc_loss(actor, b)
            pi_opt.zero_grad(set_to_none=True)
            pi_loss.backward()
            torch.nn.utils.clip_grad_norm_(actor.parameters(), 1.0)
            pi_opt.step()
            target_ent = cfg.target_entropy_per_domain * b["mask"].float().sum(-1)
            a_loss = -(log_alpha * (logp_pi.detach() + target_ent)).mean()
            a_opt.zero_grad(set_to_none=True)
            a_loss.backward()
            a_opt.step()
            _soft_update(q1_t, q1, cfg.tau)
            _soft_update(q2_t, q2, cfg.tau)
            if step % cfg.eval_every == 0 or step == cfg.cql_steps:
                if val_t is not None:
                    with torch.no_grad():
                        v_td, v_gap = critic_losses(val_t, alpha)
                    v = float(v_td)
                else:
                    v, v_gap = td.item(), gap.detach()
                rec = {"phase": 1.0, "step": float(step), "td": td.item(), "cql_gap": gap.item(),
                       "q_loss": q_loss.item(), "pi_loss": pi_loss.item(), "alpha": float(alpha),
                       "q_pi": q_pi.mean().item(), "val_td": v, "val_cql_gap": float(v_gap)}
                history.append(rec)
                bar.set_postfix(td=f"{td.item():.3f}", gap=f"{gap.item():.2f}", val_td=f"{v:.3f}")
                if v < best_val - 1e-5:
                    best_val, best_state, bad = v, copy.deepcopy(actor.state_dict()), 0
                    best = {"phase": "cql", "step": step, "val_td": v}
                elif selector is None:  # with held-out selection, the TD error decides nothing
                    bad += 1
                    if bad >= cfg.patience:
                        log.info("CQL: early stop at step %d (best validation TD %.4f at step %s)",
                                 step, best_val, best.get("step"))
                        bar.update(1)
                        break
            if selector is not None and ((sel_every and step % sel_every == 0)
                                         or step == cfg.cql_steps):
                sel_bad = 0 if select("cql", step) else sel_bad + 1
                if sel_patience and sel_bad >= sel_patience:
                    log.info("CQL: early stop at step %d (best held-out score %.4f at %s %s)",
                             step, sel_best["heldout_score"], sel_best["phase"], sel_best["step"])
                    bar.update(1)
                    break
            bar.update(1)  # after the postfix, so a log line shows this step's numbers
            if step % cfg.checkpoint_every == 0:
                checkpoint("cql", step, actor)
    if selector is None:  # with a selector, finish() loads the held-out best
        actor.load_state_dict(best_state)
    return finish(actor, best)
