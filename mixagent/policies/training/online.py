"""Online training of the mixing agent: stable-baselines3 PPO or SAC over Ray-parallel envs.

Read top to bottom: the typed config; the vectorised env (one proxy env per Ray actor, or
in-process with one worker; observations are the agent's inputs via ``FeatureWrapper``); the
SB3 model over the equivariant networks (:mod:`.sb3_policies`); callbacks that fit the input
normalisation on the first rollout and write checkpoints; the export to the policy format.

SB3's own ``model.save`` zip contains pickles, so it is never the artifact: the actor's weights
are exported to a :class:`~mixagent.policies.agent.MixingAgent` (config.json +
model.safetensors), the same format offline training writes.
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
from stable_baselines3.common.callbacks import BaseCallback

from mixagent.config import StrictModel
from mixagent.policies.agent import AgentParams, MixingAgent
from mixagent.policies.features import FeatureSpec
from mixagent.policies.network import NetworkConfig
from mixagent.utils.progress import Progress, resolve_mode

log = logging.getLogger(__name__)


class OnlineConfig(StrictModel):
    """Hyper-parameters of online training (recorded in the policy's provenance)."""

    algo: Literal["ppo", "sac"] = "ppo"
    seed: int = 0
    timesteps: int = Field(default=2000, gt=0, description="env steps in total (all workers)")
    workers: int = Field(default=1, ge=1, description="parallel envs (Ray actors when > 1)")
    threads_per_env: int = Field(default=1, ge=1)
    features: FeatureSpec = Field(default_factory=FeatureSpec)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    learning_rate: float = Field(default=3e-4, gt=0)
    gamma: float = Field(default=0.99, ge=0, le=1)
    normalize_reward: bool = Field(default=True, description="SB3 VecNormalize on rewards only")
    # PPO
    n_steps: int = Field(default=20, gt=1, description="steps per env per rollout")
    batch_size: int = Field(default=20, gt=1)
    n_epochs: int = Field(default=10, gt=0)
    gae_lambda: float = Field(default=0.95, ge=0, le=1)
    clip_range: float = Field(default=0.2, gt=0)
    ent_coef: float = Field(default=0.0, ge=0)
    log_std_init: float = Field(default=-0.5)
    # SAC
    learning_starts: int = Field(default=40, ge=0)
    buffer_size: int = Field(default=100_000, gt=0)
    sac_batch_size: int = Field(default=64, gt=0)
    tau: float = Field(default=0.005, gt=0, le=1)
    # checkpoints
    checkpoint_every: int = Field(default=0, ge=0, description="timesteps; 0 = only the final policy")


@dataclass
class OnlineResult:
    agent: MixingAgent
    timesteps: int
    seconds: float
    episode_returns: list[float] = field(default_factory=list)


class _LogProgress(BaseCallback):
    """Log lines (every 30 s and at the end) when SB3's bar is off because stderr is not a terminal:
    a job writing to a log file otherwise says nothing for the whole training run."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.bar = Progress(total, "online training", "env step", progress=None, logger=log)

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


class _FitNormalizers(BaseCallback):
    """Fit the networks' input normalisation once, on the first collected observations."""

    def __init__(self, min_samples: int = 2) -> None:
        super().__init__()
        self.done = False
        self.min_samples = max(2, min_samples)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.done:
            return
        model = self.model
        if hasattr(model, "rollout_buffer"):
            obs = model.rollout_buffer.observations
            dom, glob = obs["domains"], obs["global"]
        else:
            buf = model.replay_buffer
            n = buf.buffer_size if buf.full else buf.pos
            if n * buf.n_envs < self.min_samples:
                return
            dom, glob = buf.observations["domains"][:n], buf.observations["global"][:n]
        dom = dom.reshape(-1, *dom.shape[-2:])
        glob = glob.reshape(-1, glob.shape[-1])
        first = model.policy.normalizers()[0]
        first.fit(dom, glob)
        stats = first.stats()
        for norm in model.policy.normalizers()[1:]:
            norm.set_stats(stats)
        self.done = True
        log.info("fitted input normalisation on %d observations", dom.shape[0])


class _Checkpoints(BaseCallback):
    def __init__(self, every: int, out: Path, export: Any):
        super().__init__()
        self.every, self.out, self.export, self.last = every, out, export, 0

    def _on_step(self) -> bool:
        if self.every and self.num_timesteps - self.last >= self.every:
            self.last = self.num_timesteps
            self.export(self.model).save(self.out / "checkpoints" / f"step-{self.num_timesteps:07d}")
        return True


def export_agent(model: Any, cfg: OnlineConfig, action_scale: float, floor: float,
                 provenance: dict[str, Any] | None = None) -> MixingAgent:
    """The SB3 model's actor as a :class:`MixingAgent` (a copy; training may go on)."""
    actor = copy.deepcopy(model.policy.agent_actor).cpu().eval()
    params = AgentParams(features=cfg.features, network=cfg.network, action_scale=action_scale,
                         floor=floor, squash="clip" if cfg.algo == "ppo" else "tanh",
                         deterministic=True)
    agent = MixingAgent(params, actor=actor)
    agent.provenance = dict(provenance or {})
    return agent


def train_online(spec: str | Path, cfg: OnlineConfig, out: Path | None = None, *,
                 progress: bool | None = False) -> OnlineResult:
    """Train with SB3 on the env of ``spec``; returns the exported agent (not yet saved).

    ``progress``: True shows SB3's bar, None shows it on a terminal and logs lines otherwise,
    False is silent.
    """
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    from mixagent.data.space import DomainSpace
    from mixagent.envs.setup import resolve_spec
    from mixagent.envs.spec import load_env_spec
    from mixagent.policies.training.ray_vecenv import EnvFactory, make_vec_env
    from mixagent.policies.training.sb3_policies import EquivariantActorCriticPolicy, EquivariantSACPolicy

    t0 = time.perf_counter()
    env_spec = load_env_spec(spec)
    factory = EnvFactory.here(str(Path(spec).resolve()), cfg.features.history, cfg.threads_per_env,
                              tuple(cfg.features.observation))
    venv = VecMonitor(make_vec_env(factory, cfg.workers))
    venv.seed(cfg.seed)
    train_env = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=cfg.gamma) \
        if cfg.normalize_reward else venv
    net = cfg.network.model_dump()
    if cfg.algo == "ppo":
        model: Any = PPO(EquivariantActorCriticPolicy, train_env, learning_rate=cfg.learning_rate,
                         n_steps=cfg.n_steps, batch_size=cfg.batch_size, n_epochs=cfg.n_epochs,
                         gamma=cfg.gamma, gae_lambda=cfg.gae_lambda, clip_range=cfg.clip_range,
                         ent_coef=cfg.ent_coef, seed=cfg.seed, device="cpu", verbose=0,
                         policy_kwargs={"network": net, "log_std_init": cfg.log_std_init})
    else:
        model = SAC(EquivariantSACPolicy, train_env, learning_rate=cfg.learning_rate,
                    buffer_size=cfg.buffer_size, learning_starts=cfg.learning_starts,
                    batch_size=cfg.sac_batch_size, tau=cfg.tau, gamma=cfg.gamma, seed=cfg.seed,
                    device="cpu", verbose=0,
                    policy_kwargs={"network": net, "action_scale": env_spec.action.scale})
    # the env's real domain space (fields, roles, token counts) for the provenance; the workers
    # have built or found the data by now, so resolving here only opens it
    space = DomainSpace.from_env(resolve_spec(env_spec))
    prov = {"name": f"{env_spec.name or 'env'}-{cfg.algo}", "training": {
        "algo": cfg.algo, "env_spec": str(spec), "timesteps": cfg.timesteps, "workers": cfg.workers},
        "hyperparameters": cfg.model_dump(mode="json"),
        "trained_on": [space.to_dict()]}

    def export(m: Any) -> MixingAgent:
        return export_agent(m, cfg, env_spec.action.scale, env_spec.action.floor, prov)

    callbacks: list[BaseCallback] = [_FitNormalizers(cfg.learning_starts if cfg.algo == "sac" else 2)]
    if out is not None and cfg.checkpoint_every:
        callbacks.append(_Checkpoints(cfg.checkpoint_every, out, export))
    mode = resolve_mode(progress)
    if mode == "log":
        callbacks.append(_LogProgress(cfg.timesteps))
    torch.manual_seed(cfg.seed)
    try:
        model.learn(total_timesteps=cfg.timesteps, callback=callbacks, progress_bar=mode == "bar")
        returns = [float(e["r"]) for e in model.ep_info_buffer]
    finally:
        train_env.close()
    seconds = time.perf_counter() - t0
    prov["compute"] = {"seconds": round(seconds, 1), "env_steps": int(model.num_timesteps),
                       "workers": cfg.workers}
    prov["training"]["last_episode_returns_mean"] = float(np.mean(returns)) if returns else None
    agent = export(model)
    return OnlineResult(agent, int(model.num_timesteps), seconds, returns)
