"""A stable-baselines3 ``VecEnv`` whose environments are Ray actors (one env per actor).

SB3 has no Ray-backed VecEnv (its issue 1345 is an open request) and ``SubprocVecEnv`` cannot
leave the machine; an actor per env spreads proxy environments over a Ray cluster
(``RAY_ADDRESS``) as well as over local cores. Each actor builds its env from a picklable
factory, resets itself when an episode ends (SB3's convention: the final observation goes into
``info["terminal_observation"]``) and runs its proxy with ``MIXAGENT_NUM_THREADS`` threads, so
W actors on W cores do not oversubscribe.

``step_async`` sends every env its action at once; ``step_wait`` gathers the results, so the W
proxies train in parallel. With one worker use :func:`make_vec_env`, which builds an in-process
``DummyVecEnv`` instead (no Ray start-up cost).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn


@dataclass(frozen=True)
class EnvFactory:
    """Builds one training env: the proxy env of ``spec`` wrapped so its observations are the
    agent's inputs. Plain data, so it travels to Ray actors."""

    spec: str
    history: int = 3
    threads: int | None = 1
    #: optional observation groups the agent uses (``FeatureSpec.observation``)
    observation: tuple[str, ...] = ()
    #: environment variables the env needs in another process (``MIXAGENT_CACHE``,
    #: ``MIXAGENT_COMPILE``: :data:`mixagent.utils.raypool.FORWARDED_ENV`)
    environ: tuple[tuple[str, str], ...] = ()

    @classmethod
    def here(cls, spec: str, history: int = 3, threads: int | None = 1,
             observation: tuple[str, ...] = ()) -> EnvFactory:
        """A factory that carries this process's ``MIXAGENT_CACHE`` and ``MIXAGENT_COMPILE`` to
        wherever it runs."""
        from mixagent.utils.raypool import forwarded_env

        env = tuple(forwarded_env().items())
        return cls(spec, history, threads, observation, env)

    def __call__(self) -> gym.Env:
        for key, value in self.environ:
            os.environ[key] = value
        if self.threads is not None:
            os.environ["MIXAGENT_NUM_THREADS"] = str(self.threads)
        from mixagent.envs.proxy_env import ProxyCPTEnv
        from mixagent.policies.features import FeatureSpec, FeatureWrapper

        return FeatureWrapper(ProxyCPTEnv(self.spec, progress=False), FeatureSpec(history=self.history, observation=list(self.observation)))


class _EnvWorker:
    """The Ray actor: one env, auto-reset on episode end."""

    def __init__(self, factory: Callable[[], gym.Env]):
        self.env = factory()

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        return self.env.observation_space, self.env.action_space

    def reset(self, seed: int | None, options: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
        return self.env.reset(seed=seed, options=options or None)

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, dict[str, Any], Any]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        done = terminated or truncated
        info["TimeLimit.truncated"] = truncated and not terminated
        reset_info: dict[str, Any] = {}
        if done:
            info["terminal_observation"] = obs
            obs, reset_info = self.env.reset()
        return obs, float(reward), done, info, reset_info

    def get_attr(self, name: str) -> Any:
        return getattr(self.env, name)

    def set_attr(self, name: str, value: Any) -> None:
        setattr(self.env, name, value)

    def env_method(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return getattr(self.env, name)(*args, **kwargs)

    def is_wrapped(self, wrapper_class: type) -> bool:
        from stable_baselines3.common.env_util import is_wrapped

        return is_wrapped(self.env, wrapper_class)

    def close(self) -> None:
        self.env.close()


def _stack(obs: Sequence[Any], space: gym.Space) -> VecEnvObs:
    if isinstance(space, gym.spaces.Dict):
        return {k: np.stack([o[k] for o in obs]) for k in space.spaces}
    return np.stack(obs)


class RayVecEnv(VecEnv):
    """``num_envs`` environments, each in its own Ray actor (``num_cpus`` each)."""

    def __init__(self, factory: Callable[[], gym.Env], num_envs: int, *, num_cpus: float = 1.0):
        import ray

        remote = ray.remote(num_cpus=num_cpus)(_EnvWorker)
        self._ray = ray
        self.workers = [remote.remote(factory) for _ in range(num_envs)]
        obs_space, act_space = ray.get(self.workers[0].spaces.remote())
        super().__init__(num_envs, obs_space, act_space)
        self._pending: list[Any] | None = None
        self.reset_infos: list[dict[str, Any]] = [{} for _ in range(num_envs)]

    def reset(self) -> VecEnvObs:
        results = self._ray.get([w.reset.remote(self._seeds[i], self._options[i])
                                 for i, w in enumerate(self.workers)])
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [info for _, info in results]
        return _stack([o for o, _ in results], self.observation_space)

    def step_async(self, actions: np.ndarray) -> None:
        self._pending = [w.step.remote(a) for w, a in zip(self.workers, actions, strict=True)]

    def step_wait(self) -> VecEnvStepReturn:
        assert self._pending is not None, "step_wait() without step_async()"
        results = self._ray.get(self._pending)
        self._pending = None
        obs, rews, dones, infos, reset_infos = zip(*results, strict=True)
        for i, (done, ri) in enumerate(zip(dones, reset_infos, strict=True)):
            if done:
                self.reset_infos[i] = ri
        return (_stack(obs, self.observation_space), np.asarray(rews, dtype=np.float32),
                np.asarray(dones, dtype=bool), list(infos))

    def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):  # a dead actor is already closed
                self._ray.get(w.close.remote(), timeout=30)
            self._ray.kill(w)
        self.workers = []

    def _targets(self, indices: VecEnvIndices) -> list[Any]:
        return [self.workers[i] for i in self._get_indices(indices)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._ray.get([w.get_attr.remote(attr_name) for w in self._targets(indices)])

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._ray.get([w.set_attr.remote(attr_name, value) for w in self._targets(indices)])

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        return self._ray.get([w.env_method.remote(method_name, method_args, method_kwargs)
                              for w in self._targets(indices)])

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return self._ray.get([w.is_wrapped.remote(wrapper_class) for w in self._targets(indices)])


def ensure_ray(num_cpus: int) -> None:
    """Start a local Ray (or join ``RAY_ADDRESS``) unless one is running in this process."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def make_vec_env(factory: Callable[[], gym.Env], workers: int) -> VecEnv:
    """``workers`` envs: in-process (``DummyVecEnv``) for one, Ray actors for more."""
    if workers <= 1:
        return DummyVecEnv([factory])
    ensure_ray(workers)
    return RayVecEnv(factory, workers)
