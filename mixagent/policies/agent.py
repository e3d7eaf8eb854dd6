"""The learned mixing agent as a :class:`~mixagent.policies.protocol.MixingPolicy`.

It keeps a short history of observations (:mod:`mixagent.policies.features`), runs the
equivariant actor (:mod:`mixagent.policies.network`) and maps its per-domain actions onto the
simplex with the environment's action map (:func:`mixagent.envs.actions.weights_from_action`,
its floor made feasible for any K by :func:`~mixagent.envs.actions.policy_floor`). The same
object comes out of offline training (CQL), online training (SB3 PPO/SAC) and ``load_policy``;
it acts on any number of domains.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from mixagent.config import StrictModel
from mixagent.envs.actions import policy_floor, weights_from_action
from mixagent.errors import ConfigError
from mixagent.policies.features import (
    IS_TARGET_COLUMN,
    FeatureSpec,
    History,
    domain_input_names,
    global_input_names,
)
from mixagent.policies.network import ActorNet, NetworkConfig
from mixagent.policies.protocol import MixingPolicy, register_policy


class AgentParams(StrictModel):
    """Everything that defines the agent apart from its tensors."""

    features: FeatureSpec = Field(default_factory=FeatureSpec)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    action_scale: float = Field(default=3.0, gt=0, description="weights = softmax(scale·action)")
    floor: float = Field(default=0.0, ge=0, lt=1, description="least weight per domain (capped at 0.5/K)")
    squash: Literal["tanh", "clip"] = Field(
        default="tanh", description="deterministic action: tanh(mean) (CQL/SAC) or clip (PPO)")
    deterministic: bool = Field(default=True, description="act on the mean; else sample (seeded)")


@register_policy
class MixingAgent(MixingPolicy):
    """A per-domain, permutation-equivariant learned policy (random init unless trained)."""

    kind = "agent"
    Params = AgentParams

    def __init__(self, params: StrictModel | None = None, *, actor: ActorNet | None = None,
                 **kwargs: Any):
        super().__init__(params, **kwargs)
        p: AgentParams = self.params  # type: ignore[assignment]
        self.domain_inputs = domain_input_names(p.features)
        self.global_inputs = global_input_names(p.features)
        self.network = actor if actor is not None else ActorNet(
            len(self.domain_inputs), len(self.global_inputs), p.network, IS_TARGET_COLUMN)
        self.network.eval()
        self.history = History(p.features)
        self._gen = torch.Generator()

    def _reset(self) -> None:
        self.history.reset()
        self._gen.manual_seed(self.seed)

    def _act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        p: AgentParams = self.params  # type: ignore[assignment]
        d, g = self.history.push(obs)
        with torch.inference_mode():
            dom = torch.from_numpy(d).unsqueeze(0)
            glob = torch.from_numpy(g).unsqueeze(0)
            if p.deterministic:
                mean, _ = self.network(dom, glob)
                a = torch.tanh(mean) if p.squash == "tanh" else mean.clamp(-1.0, 1.0)
            else:
                a, _ = self.network.sample(dom, glob, generator=self._gen)
        k = int(a.shape[-1])
        return weights_from_action(a[0].double().numpy(), p.action_scale, policy_floor(p.floor, k))

    # -- run state (CPT resume) ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The observation window and the sampling generator (plain JSON, exact to the bit)."""
        window = [{k: {"dtype": str(v.dtype), "shape": list(v.shape), "values": v.ravel().tolist()}
                   for k, v in obs.items()} for obs in self.history._obs]
        gen = base64.b64encode(self._gen.get_state().numpy().tobytes()).decode("ascii")
        return {"history": window, "generator": gen}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.history.reset()
        for obs in state["history"]:
            self.history.push({k: np.asarray(v["values"], dtype=v["dtype"]).reshape(v["shape"])
                               for k, v in obs.items()})
        raw = np.frombuffer(base64.b64decode(state["generator"]), dtype=np.uint8).copy()
        self._gen.set_state(torch.from_numpy(raw))

    # -- serialisation ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["architecture"] = {
            "network": "ActorNet",
            "domain_inputs": self.domain_inputs,
            "global_inputs": self.global_inputs,
            "parameters": int(sum(t.numel() for t in self.network.parameters())),
        }
        cfg["normalization"] = self.network.norm.stats()
        return cfg

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.network.state_dict().items()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], tensors: Mapping[str, Any]) -> MixingAgent:
        params = AgentParams.model_validate(config.get("params", {}))
        agent = cls(params)
        arch = config.get("architecture", {})
        if arch and (arch.get("domain_inputs") != agent.domain_inputs
                     or arch.get("global_inputs") != agent.global_inputs):
            raise ConfigError("policy config: its input features differ from this mixagent version's "
                              f"({arch.get('domain_inputs')} vs {agent.domain_inputs}); it was saved "
                              "by an incompatible version")
        if "normalization" in config:
            agent.network.norm.set_stats(config["normalization"])
        missing, unexpected = agent.network.load_state_dict(dict(tensors), strict=False)
        if missing or unexpected:
            raise ConfigError(f"policy tensors do not match the architecture: missing {missing}, "
                              f"unexpected {unexpected}")
        agent.provenance = dict(config.get("provenance", {}))
        return agent

    def describe(self) -> str:
        name = self.provenance.get("name")
        return str(name) if name else f"agent({self.params.network.mixer})"  # type: ignore[attr-defined]
