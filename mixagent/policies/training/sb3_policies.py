"""stable-baselines3 policies built on the agent's equivariant networks.

SB3's own policies are MLPs over a flattened observation, tied to one K. These subclasses keep
SB3's algorithms (PPO, SAC) untouched and swap the networks: the features extractor passes the
agent inputs through (a ``Dict`` of per-domain and global arrays, built by
:class:`~mixagent.policies.features.FeatureWrapper`), and

* PPO: the "mlp extractor" is an :class:`ActorNet` (per-domain action means = ``latent_pi``,
  read out by an identity ``action_net``) plus a :class:`ValueNet` (``latent_vf`` = V(s));
  the Gaussian's log-std is one shared scalar, not one per domain.
* SAC: the actor is an :class:`ActorNet` (mean and log-std per domain, tanh-squashed by SB3's
  distribution — the same parameterisation as offline CQL); the critics are :class:`CriticNet` s.

The action space is still ``Box(K)`` for the env being trained on, but every parameter is
shared across domains, so the exported :class:`~mixagent.policies.agent.MixingAgent` acts on any K.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.policies import ActorCriticPolicy, ContinuousCritic
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.sac.policies import Actor, SACPolicy
from torch import nn

from mixagent.policies.features import IS_TARGET_COLUMN
from mixagent.policies.network import ActorNet, CriticNet, NetworkConfig, ValueNet


class PassThrough(BaseFeaturesExtractor):
    """Hands the ``Dict`` observation to the equivariant networks unchanged."""

    def __init__(self, observation_space: gym.spaces.Dict):
        super().__init__(observation_space, features_dim=1)

    def forward(self, observations: Any) -> Any:
        return observations


def _dims(space: gym.spaces.Dict) -> tuple[int, int]:
    return int(space["domains"].shape[-1]), int(space["global"].shape[-1])


class _ActorValue(nn.Module):
    """PPO's "mlp extractor": per-domain action means and the state value."""

    def __init__(self, space: gym.spaces.Dict, num_domains: int, cfg: NetworkConfig):
        super().__init__()
        fd, fg = _dims(space)
        self.actor = ActorNet(fd, fg, cfg, IS_TARGET_COLUMN)
        self.value = ValueNet(fd, fg, cfg, IS_TARGET_COLUMN)
        self.latent_dim_pi = num_domains
        self.latent_dim_vf = 1

    def forward_actor(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.actor(obs["domains"], obs["global"])[0]

    def forward_critic(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.value(obs["domains"], obs["global"]).unsqueeze(-1)

    def forward(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(obs), self.forward_critic(obs)


class EquivariantActorCriticPolicy(ActorCriticPolicy):
    """PPO/A2C policy over the equivariant actor and value networks."""

    def __init__(self, *args: Any, network: dict[str, Any] | None = None, **kwargs: Any):
        self.network_config = NetworkConfig.model_validate(network or {})
        kwargs.setdefault("features_extractor_class", PassThrough)
        kwargs.setdefault("ortho_init", False)
        kwargs.setdefault("share_features_extractor", True)
        super().__init__(*args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = _ActorValue(self.observation_space, int(self.action_space.shape[0]),
                                         self.network_config)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        self.action_net = nn.Identity()
        self.value_net = nn.Identity()
        self.log_std = nn.Parameter(torch.full((1,), float(self.log_std_init)))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    @property
    def agent_actor(self) -> ActorNet:
        return self.mlp_extractor.actor

    def normalizers(self) -> list[Any]:
        return [self.mlp_extractor.actor.norm, self.mlp_extractor.value.norm]


class EquivariantSACActor(Actor):
    """SAC's actor with the equivariant :class:`ActorNet` in place of its MLP heads."""

    def __init__(self, *args: Any, network: NetworkConfig, **kwargs: Any):
        kwargs["net_arch"] = []
        super().__init__(*args, **kwargs)
        fd, fg = _dims(self.observation_space)
        del self.latent_pi, self.mu, self.log_std
        self.net = ActorNet(fd, fg, network, IS_TARGET_COLUMN)
        self.network = network

    def get_action_dist_params(self, obs: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        features = self.extract_features(obs, self.features_extractor)
        mean, log_std = self.net(features["domains"], features["global"])
        return mean, log_std, {}


class EquivariantCritic(ContinuousCritic):
    """SAC's twin critics as equivariant :class:`CriticNet` s."""

    def __init__(self, *args: Any, network: NetworkConfig, action_scale: float, **kwargs: Any):
        kwargs["net_arch"] = []
        super().__init__(*args, **kwargs)
        fd, fg = _dims(self.observation_space)
        n = len(self.q_networks)
        self.q_networks = nn.ModuleList(CriticNet(fd, fg, network, IS_TARGET_COLUMN, action_scale)
                                        for _ in range(n))

    def forward(self, obs: Any, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f = self.extract_features(obs, self.features_extractor)
        return tuple(q(f["domains"], f["global"], actions).unsqueeze(-1) for q in self.q_networks)

    def q1_forward(self, obs: Any, actions: torch.Tensor) -> torch.Tensor:
        f = self.extract_features(obs, self.features_extractor)
        return self.q_networks[0](f["domains"], f["global"], actions).unsqueeze(-1)


class EquivariantSACPolicy(SACPolicy):
    """SAC policy over the equivariant actor and critics (no shared extractor: there is none)."""

    def __init__(self, *args: Any, network: dict[str, Any] | None = None, action_scale: float = 3.0,
                 **kwargs: Any):
        self.network_config = NetworkConfig.model_validate(network or {})
        self.action_scale = action_scale
        kwargs.setdefault("features_extractor_class", PassThrough)
        kwargs["share_features_extractor"] = False
        super().__init__(*args, **kwargs)

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> Actor:
        kw = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return EquivariantSACActor(**kw, network=self.network_config).to(self.device)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> ContinuousCritic:
        kw = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return EquivariantCritic(**kw, network=self.network_config,
                                 action_scale=self.action_scale).to(self.device)

    @property
    def agent_actor(self) -> ActorNet:
        return self.actor.net

    def normalizers(self) -> list[Any]:
        return [self.actor.net.norm, *(q.norm for q in self.critic.q_networks),
                *(q.norm for q in self.critic_target.q_networks)]
