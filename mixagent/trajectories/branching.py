"""Branching: K actions tried from one snapshot per re-weighting step, then one is continued.

At step ``t`` the worker snapshots the environment, proposes K actions (branch 0 is the
explorer's own; branches 1..K-1 are further explorer proposals or perturbations of branch 0),
records all K transitions, and continues the episode from the branch chosen by ``select``:
``explorer`` (branch 0: the episode stays on the explorer's path, so its return is the
explorer's return), ``best`` (highest reward) or ``random``.

Two implementations with the same results (to floating-point reassociation):

* **sequential** — ``restore → step`` per branch through the env's public API. Always correct;
  costs one full re-weighting step per transition, like plain episodes.
* **batched** — the K branches train and evaluate as one folded computation
  (:mod:`mixagent.trajectories.replicas`), and the chosen branch's end state is installed with
  ``env.restore``. The first batched step of a worker is checked against a real ``env.step``;
  a mismatch, an unfoldable model or any error falls back to sequential with a warning.

The batched path turns each branch's evaluation into a transition with the env's own
:class:`~mixagent.envs.transition.MixingTransition` (``env.transitions.step`` from the snapshot's
state) and :meth:`ProxyCPTEnv.info`, the definitions ``step`` uses, so observation, reward and
info mean the same; the check above guards the folded training and evaluation themselves.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from mixagent.config import StrictModel

log = logging.getLogger(__name__)


class BranchConfig(StrictModel):
    """How branching works (``--branch K`` and friends)."""

    k: int = Field(default=1, ge=1, le=64, description="actions tried per step (1 = no branching)")
    select: Literal["explorer", "best", "random"] = Field(
        default="explorer", description="which branch the episode continues from")
    alternatives: Literal["auto", "explorer", "perturb"] = Field(
        default="auto", description="branches 1..K-1: more explorer proposals (stateless explorers), "
        "or Dirichlet perturbations of branch 0's weights; auto picks by the explorer")
    perturb_concentration: float = Field(default=50.0, gt=0)
    batched: Literal["auto", "off"] = Field(
        default="auto", description="train the K branches as one folded computation when the "
        "model allows it (verified once per worker), else one after another")

    def identity(self) -> dict[str, Any]:
        """The fields that change rows (all of them; ``batched`` changes float rounding)."""
        return self.model_dump(mode="json")


@dataclass
class Transition:
    """One env transition as the worker records it."""

    action: np.ndarray  # float32 env action
    obs: dict[str, np.ndarray]  # after the step
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    batched: bool = False


class Brancher:
    """Runs one branched step of an env (see module docstring)."""

    def __init__(self, env: Any, config: BranchConfig):
        self.env = env
        self.config = config
        self._trainer: Any = None
        self._samplers: list[Any] = []
        self._verified = False
        self.batched_enabled = config.batched == "auto" and config.k > 1
        self.fallback_reason: str | None = None

    # -- public ------------------------------------------------------------------------------------
    def step(self, actions: list[np.ndarray], pick: int | None) -> tuple[list[Transition], int]:
        """Try ``actions`` from the env's current state; leave the env in the chosen branch's state.

        ``pick`` is the branch to continue from, or None for the one with the highest reward
        (ties: the lowest branch id). Returns the K transitions (in branch order) and the choice.
        """
        snap = self.env.snapshot()
        if self.batched_enabled:
            try:
                out = self._batched(snap, actions, pick)
                if out is not None:
                    return out
            except Exception as err:  # any surprise in the fast path: fall back, keep collecting
                self._disable(f"batched branching failed ({type(err).__name__}: {err})")
                self.env.restore(snap)
        return self._sequential(snap, actions, pick)

    # -- sequential --------------------------------------------------------------------------------
    def _sequential(self, snap: Any, actions: list[np.ndarray], pick: int | None
                    ) -> tuple[list[Transition], int]:
        k = len(actions)
        # the continued branch runs last, so the env is already in its state (no extra restore)
        order = [i for i in range(k) if i != pick] + ([pick] if pick is not None else [])
        out: dict[int, Transition] = {}
        ends: dict[int, Any] = {}
        for n, i in enumerate(order):
            t0 = time.perf_counter()
            if n:
                self.env.restore(snap)
            obs, r, term, trunc, info = self.env.step(actions[i])
            info = {**info, "wall_time": time.perf_counter() - t0}
            out[i] = Transition(np.asarray(actions[i], np.float32), obs, float(r), bool(term),
                                bool(trunc), info)
            if pick is None:
                ends[i] = self.env.snapshot()
        transitions = [out[i] for i in range(k)]
        if pick is None:
            pick = best_branch(transitions)
            self.env.restore(ends[pick])
        return transitions, pick

    # -- batched -----------------------------------------------------------------------------------
    def _disable(self, reason: str) -> None:
        if self.batched_enabled:
            log.warning("%s; branching one branch after another from now on", reason)
        self.batched_enabled = False
        self.fallback_reason = reason
        self._trainer = None

    def _get_trainer(self) -> Any:
        from mixagent.trajectories.replicas import FoldError, ReplicaTrainer

        if self._trainer is None:
            try:
                self._trainer = ReplicaTrainer(self.env.engine, self.config.k)
            except FoldError as err:
                self._disable(f"cannot batch the branches: {err}")
                return None
        return self._trainer

    def _batched(self, snap: Any, actions: list[np.ndarray], pick: int | None
                 ) -> tuple[list[Transition], int] | None:
        trainer = self._get_trainer()
        if trainer is None or len(actions) != trainer.k:
            return None
        out, ends = self._batched_run(snap, actions, trainer)
        if not self._verified:
            self.env.restore(snap)
            ref = self.env.step(actions[0])
            problem = compare_transition(out[0], ref)
            if problem:
                self._disable(f"batched branching does not reproduce env.step ({problem})")
                self.env.restore(snap)
                return None
            self._verified = True
            log.info("batched branching verified against env.step (K=%d)", trainer.k)
        chosen = best_branch(out) if pick is None else pick
        self.env.restore(ends(chosen))
        return out, chosen

    def _batched_run(self, snap: Any, actions: list[np.ndarray], trainer: Any) -> tuple[
            list[Transition], Any]:
        from mixagent.data.sampler import MixtureSampler
        from mixagent.envs.actions import weights_from_action

        t0 = time.perf_counter()
        env, eng = self.env, self.env.engine
        k = len(actions)
        spec = env.env_spec
        steps = eng.cpt.steps_per_action
        b, seq = eng.cpt.batch_size, eng.cpt.seq_len
        if steps > eng.steps_left:
            raise RuntimeError("no CPT budget left for a branch step")
        weights, batches, sampler_states = [], [], []
        seed = snap.engine.sampler["seed"]
        if len(self._samplers) != k or self._samplers[0].seed != seed:
            # one sampler per branch, kept across steps so their permutation caches stay warm
            self._samplers = [MixtureSampler(eng.data, seq, seed=seed, domains=eng.domains)
                              for _ in range(k)]
        for a, s in zip(actions, self._samplers, strict=True):
            w = weights_from_action(a, spec.action.scale, spec.action.floor)
            s.load_state_dict(snap.engine.sampler)
            s.set_weights(w)
            tokens, _ = s.next_batch(steps * b)
            weights.append(w)
            batches.append(torch.from_numpy(tokens).view(steps, b, seq))
            sampler_states.append(s.state_dict())
        lrs = eng.lrs[eng.step : eng.step + steps]
        trainer.load_live()
        losses = trainer.train(torch.stack(batches).to(eng.device), lrs).mean(dim=1).cpu().numpy()
        t_train = time.perf_counter() - t0
        results = trainer.evaluate()
        alignments = trainer.alignment()
        t_total = time.perf_counter() - t0
        out, ends = [], []
        for i in range(k):
            res = results[i]
            st = env.transitions.step(snap.state, weights[i], res.losses, res.tasks, alignments[i])
            info = env.info(st.state, tokens=snap.engine.tokens + steps * b * seq,
                            wall=t_total / k, train=t_train / k,
                            evaluation=(t_total - t_train) / k, train_loss=float(losses[i]))
            ends.append(st.state)
            out.append(Transition(np.asarray(actions[i], np.float32), st.observation, st.reward,
                                  st.terminated, False, info, batched=True))

        def end_state(i: int) -> Any:
            from mixagent.proxy.engine import EngineSnapshot

            es = snap.engine
            engine_snap = EngineSnapshot(
                model=trainer.model_state(i, es.model),
                optimizer=trainer.optimizer_state(i, es.optimizer, float(lrs[-1])),
                sampler=sampler_states[i], step=es.step + steps, tokens=es.tokens + steps * b * seq,
                rng={key: v.clone() for key, v in es.rng.items()})
            return dataclasses.replace(snap, engine=engine_snap, state=ends[i])

        return out, end_state


def best_branch(transitions: list[Transition]) -> int:
    """The branch with the highest reward (the lowest id among ties)."""
    return int(np.argmax([t.reward for t in transitions]))


def compare_transition(mine: Transition, ref: tuple[Any, ...], rtol: float = 1e-4, atol: float = 1e-5) -> str:
    """'' if a batched transition matches the env's own ``step`` result, else what differs."""
    obs, reward, term, trunc, info = ref
    checks = [
        ("reward", np.array([mine.reward]), np.array([reward]), atol),
        ("losses", mine.info["losses"], info["losses"], 0.0),
        ("weights", mine.info["weights"], info["weights"], 1e-12),
        ("train_loss", np.array([mine.info["train_loss"]]), np.array([info["train_loss"]]), 0.0),
    ]
    checks += [(f"obs[{key}]", mine.obs[key], obs[key], atol) for key in obs]
    mt, rt = mine.info["task_metrics"], info["task_metrics"]
    if set(mt) != set(rt):
        return f"task sets {sorted(mt)} vs {sorted(rt)}"
    checks += [(f"task {n}.{m}", np.array([mt[n][m]]), np.array([rt[n][m]]), atol)
               for n in rt for m in rt[n]]
    for name, a, b, at in checks:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=at):
            return f"{name}: {a.ravel()[:4]} vs {b.ravel()[:4]}"
    if (bool(term), bool(trunc)) != (mine.terminated, mine.truncated):
        return "terminated/truncated flags"
    if set(info) - set(mine.info) - {"data_seed"}:
        return f"env info has keys the batched path lacks: {sorted(set(info) - set(mine.info))}"
    return ""
