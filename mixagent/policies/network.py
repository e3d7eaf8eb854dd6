"""The learned agent's networks: per-domain, permutation-equivariant, any number of domains.

Every domain is a token: a shared encoder embeds its inputs (plus the broadcast global inputs),
mixing layers let domains see each other — role-aware pooling (mean over source domains, mean
over target domains, max over all; DeepSets-style) or self-attention — and a shared head reads
one output per domain. Nothing has a size tied to K, so parameters trained on one domain space
act on another; permuting the domains permutes the outputs.

* :class:`ActorNet` — per-domain mean and log-std of a tanh-Gaussian over actions in [-1, 1];
  weights are ``softmax(scale·a)`` over the domains (the environment's action map).
* :class:`CriticNet` — ``Q(s, a)``: the action's per-domain value (and the weight it implies)
  is an extra per-domain input; a pooled summary gives one scalar.
* :class:`ValueNet` — ``V(s)`` for PPO.

Batches of different K are padded; ``mask`` (B, K) marks real domains. Input normalisation is
part of the network (:class:`Normalizer`), fitted on training data and saved in ``config.json``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from mixagent.config import StrictModel
from mixagent.envs.actions import policy_floor

LOG_STD_MIN, LOG_STD_MAX = -5.0, 1.0


class NetworkConfig(StrictModel):
    """Architecture of the agent's networks (shared by actor and critics)."""

    hidden: int = Field(default=64, ge=4)
    layers: int = Field(default=2, ge=0, description="mixing layers across domains")
    mixer: Literal["pool", "attention"] = "pool"
    heads: int = Field(default=2, ge=1, description="attention heads (mixer: attention)")


class Normalizer(nn.Module):
    """Fixed affine input normalisation (statistics over transitions × domains, so K-agnostic).

    Binary role flags are left as they are (mean 0, std 1)."""

    def __init__(self, d_in: int, g_in: int, skip_domain: tuple[int, ...] = ()):
        super().__init__()
        self.skip_domain = skip_domain
        self.register_buffer("dom_mean", torch.zeros(d_in), persistent=False)
        self.register_buffer("dom_std", torch.ones(d_in), persistent=False)
        self.register_buffer("glob_mean", torch.zeros(g_in), persistent=False)
        self.register_buffer("glob_std", torch.ones(g_in), persistent=False)

    @torch.no_grad()
    def fit(self, dom: np.ndarray, glob: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Statistics from ``dom`` (N, K, Fd), ``glob`` (N, G) and the domain mask (N, K)."""
        flat = dom.reshape(-1, dom.shape[-1]) if mask is None else dom[mask.astype(bool)]
        dm, ds = flat.mean(0), flat.std(0)
        gm, gs = glob.mean(0), glob.std(0)
        for i in self.skip_domain:
            dm[i], ds[i] = 0.0, 1.0
        self.set_stats({"dom_mean": dm, "dom_std": ds, "glob_mean": gm, "glob_std": gs})

    def set_stats(self, stats: dict[str, object]) -> None:
        for name in ("dom_mean", "dom_std", "glob_mean", "glob_std"):
            buf = getattr(self, name)
            v = torch.as_tensor(np.asarray(stats[name], dtype=np.float32))
            if v.shape != buf.shape:
                raise ValueError(f"normalisation {name} has shape {tuple(v.shape)}, expected {tuple(buf.shape)}")
            if name.endswith("std"):
                v = torch.where(v > 1e-6, v, torch.ones_like(v))
            buf.copy_(v)

    def stats(self) -> dict[str, list[float]]:
        return {n: getattr(self, n).tolist() for n in ("dom_mean", "dom_std", "glob_mean", "glob_std")}

    def forward(self, dom: torch.Tensor, glob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (dom - self.dom_mean) / self.dom_std, (glob - self.glob_mean) / self.glob_std


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


def _masked_max(h: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
    if m is None:
        return h.max(1).values
    filled = h.masked_fill(~m.bool().unsqueeze(-1), -torch.inf)
    out = filled.max(1).values
    return torch.where(torch.isfinite(out), out, torch.zeros_like(out))


def _role_pool(h: torch.Tensor, roles: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``[mean over source, mean over target, max over all]`` (B, 3H) in one batched matmul;
    ``roles`` (B, 2, K) holds the normalised source/target membership (see :func:`_roles`)."""
    means = torch.bmm(roles, h).flatten(1)
    return torch.cat([means, _masked_max(h, mask)], dim=-1)


def _roles(tgt: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    src = 1.0 - tgt
    if mask is not None:
        src, tgt = src * mask, tgt * mask
    r = torch.stack([src, tgt], dim=1)
    return r / r.sum(-1, keepdim=True).clamp_min(1.0)


class _PoolMixer(nn.Module):
    """Each domain sees the mean of source domains, the mean of target domains and the max over
    all (role-aware DeepSets): linear in K, equivariant, defined for any K ≥ 1."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.ctx = nn.Linear(3 * hidden, hidden)
        self.ff = _mlp(2 * hidden, 2 * hidden, hidden)

    def forward(self, h: torch.Tensor, roles: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.norm(h)
        c = self.ctx(_role_pool(x, roles, mask)).unsqueeze(1).expand_as(x)
        return h + self.ff(torch.cat([x, c], dim=-1))


class _AttentionMixer(nn.Module):
    """A pre-norm transformer block without positions (roles are an input feature)."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(hidden)
        self.ff = _mlp(hidden, 2 * hidden, hidden)

    def forward(self, h: torch.Tensor, roles: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.norm1(h)
        pad = None if mask is None else ~mask.bool()
        a, _ = self.attn(x, x, x, key_padding_mask=pad, need_weights=False)
        h = h + a
        return h + self.ff(self.norm2(h))


class EquivariantEncoder(nn.Module):
    """Per-domain embedding ``(B, K, H)`` and a pooled summary ``(B, 3H)`` of raw inputs."""

    def __init__(self, d_in: int, g_in: int, cfg: NetworkConfig, target_column: int):
        super().__init__()
        h = cfg.hidden
        self.target_column = target_column
        self.embed = _mlp(d_in, h, h)
        self.glob = nn.Linear(g_in, h)
        if cfg.mixer == "attention":
            self.mixers = nn.ModuleList(_AttentionMixer(h, cfg.heads) for _ in range(cfg.layers))
        else:
            self.mixers = nn.ModuleList(_PoolMixer(h) for _ in range(cfg.layers))
        self.out_norm = nn.LayerNorm(h)

    def forward(self, dom: torch.Tensor, glob: torch.Tensor, tgt: torch.Tensor,
                mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``tgt`` (B, K) role flags; ``mask`` (B, K) real domains, or None when all are."""
        roles = _roles(tgt, mask)
        h = self.embed(dom) + self.glob(glob).unsqueeze(1)
        for mixer in self.mixers:
            h = mixer(h, roles, mask)
        h = self.out_norm(h)
        return h, _role_pool(h, roles, mask)


def _prepare(dom: torch.Tensor, mask: torch.Tensor | None, target_column: int
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Role flags and the mask as floats (None when every domain is real: the fast path)."""
    tgt = (dom[..., target_column] > 0.5).to(dom.dtype)
    if mask is None or bool(mask.all()):
        return tgt, None
    return tgt, mask.to(dom.dtype)


class ActorNet(nn.Module):
    """The policy: raw inputs → per-domain ``(mean, log_std)`` of a Gaussian over pre-squash
    actions. Deterministic action: ``tanh(mean)`` (or ``clip`` for PPO-trained agents)."""

    def __init__(self, d_in: int, g_in: int, cfg: NetworkConfig, target_column: int):
        super().__init__()
        self.norm = Normalizer(d_in, g_in, skip_domain=(target_column,))
        self.encoder = EquivariantEncoder(d_in, g_in, cfg, target_column)
        self.head = nn.Linear(cfg.hidden, 2)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.target_column = target_column

    def forward(self, dom: torch.Tensor, glob: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        tgt, m = _prepare(dom, mask, self.target_column)
        dn, gn = self.norm(dom, glob)
        h, _ = self.encoder(dn, gn, tgt, m)
        out = self.head(h)
        return out[..., 0], out[..., 1].clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, dom: torch.Tensor, glob: torch.Tensor, mask: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised tanh-Gaussian sample in (-1, 1)^K and its log-probability (B,)
        summed over real domains."""
        mean, log_std = self(dom, glob, mask)
        std = log_std.exp()
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        u = mean + std * eps
        a = torch.tanh(u)
        logp = -0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi) \
            - 2.0 * (math.log(2.0) - u - nn.functional.softplus(-2.0 * u))
        m = torch.ones_like(mean) if mask is None else mask.to(mean.dtype)
        return a, (logp * m).sum(-1)

    def log_prob(self, dom: torch.Tensor, glob: torch.Tensor, action: torch.Tensor,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probability (B,) of actions in (-1, 1) under the tanh-Gaussian."""
        mean, log_std = self(dom, glob, mask)
        a = action.clamp(-1 + 1e-4, 1 - 1e-4)
        u = torch.atanh(a)
        logp = -0.5 * ((u - mean) / log_std.exp()).pow(2) - log_std - 0.5 * math.log(2 * math.pi) \
            - torch.log1p(-a.pow(2))
        m = torch.ones_like(mean) if mask is None else mask.to(mean.dtype)
        return (logp * m).sum(-1)


def weights_from_actions(action: torch.Tensor, scale: float, mask: torch.Tensor | None = None,
                         floor: float = 0.0) -> torch.Tensor:
    """:func:`mixagent.envs.actions.weights_from_action` with the agent's floor
    (:func:`~mixagent.envs.actions.policy_floor`), in torch: batched, masked (padded domains get
    weight 0, K counts the real ones) and differentiable, for training. Tested equal to the numpy
    map; both read the floor rule from one place."""
    z = scale * action
    if mask is not None:
        z = z.masked_fill(~mask.bool(), -torch.inf)
    p = torch.softmax(z, dim=-1)
    if floor > 0:
        k = float(action.shape[-1]) if mask is None else mask.to(action.dtype).sum(-1, keepdim=True)
        f = policy_floor(floor, k)
        p = (1 - k * f) * p + f
        if mask is not None:
            p = p * mask.to(p.dtype)
    return p


class CriticNet(nn.Module):
    """``Q(s, a)``: per-domain inputs plus the action value and its implied ``weight·K``."""

    def __init__(self, d_in: int, g_in: int, cfg: NetworkConfig, target_column: int, scale: float):
        super().__init__()
        self.norm = Normalizer(d_in, g_in, skip_domain=(target_column,))
        self.encoder = EquivariantEncoder(d_in + 2, g_in, cfg, target_column)
        self.head = _mlp(3 * cfg.hidden, cfg.hidden, 1)
        self.target_column = target_column
        self.scale = scale

    def forward(self, dom: torch.Tensor, glob: torch.Tensor, action: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        tgt, m = _prepare(dom, mask, self.target_column)
        dn, gn = self.norm(dom, glob)
        w = weights_from_actions(action, self.scale, m)
        k = torch.full_like(w[..., :1], float(dom.shape[1])) if m is None else m.sum(-1, keepdim=True)
        x = torch.cat([dn, action.unsqueeze(-1), (w * k).unsqueeze(-1)], dim=-1)
        _, summary = self.encoder(x, gn, tgt, m)
        return self.head(summary).squeeze(-1)


class ValueNet(nn.Module):
    """``V(s)`` from the pooled summary (PPO's critic)."""

    def __init__(self, d_in: int, g_in: int, cfg: NetworkConfig, target_column: int):
        super().__init__()
        self.norm = Normalizer(d_in, g_in, skip_domain=(target_column,))
        self.encoder = EquivariantEncoder(d_in, g_in, cfg, target_column)
        self.head = _mlp(3 * cfg.hidden, cfg.hidden, 1)
        self.target_column = target_column

    def forward(self, dom: torch.Tensor, glob: torch.Tensor, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        tgt, m = _prepare(dom, mask, self.target_column)
        dn, gn = self.norm(dom, glob)
        _, summary = self.encoder(dn, gn, tgt, m)
        return self.head(summary).squeeze(-1)
