"""Resolving an env spec against its data directory, and building the engine behind the env.

:func:`resolve_spec` is cheap (no training): it opens the data directory (building the built-in
corpus if needed), applies the spec's ``domain_space`` (a :class:`~mixagent.data.views.
DomainView`), checks fields, domains, task sets, reward terms, the action floor and the model
config, and fixes the domain order that actions and observations use. Every problem is a
:class:`~mixagent.errors.ConfigError` of the form ``<spec file>: <key>: <what is wrong>``.

The base model is a function of the *underlying* data directory and its source-field domains,
never of the domain space: specs that differ only in ``domain_space`` (or in CPT settings) share
one cached base.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixagent.data.manifest import BENCHMARK_METRICS, DataDir
from mixagent.data.views import DomainSpaceError, DomainView
from mixagent.envs.spec import EnvSpec, load_env_spec
from mixagent.errors import ConfigError, DataError

TERM_METRICS = tuple(dict.fromkeys(m for ms in BENCHMARK_METRICS.values() for m in ms))
_builtin_dirs: dict[tuple[str, str], Path] = {}  # (cache dir, size) -> path, per process


@dataclass
class ResolvedEnv:
    """An env spec checked against its data: the domain order and roles are fixed here."""

    spec: EnvSpec
    data: DataDir  # what the env trains and evaluates on: the domain-space view, if any
    domains: list[str]  # action / observation order (domains of ``data``)
    is_target: np.ndarray  # bool per domain
    pretrain_domains: list[str]  # every domain of the source field, of ``data_dir``
    hf_config: Any
    data_dir: DataDir | None = None  # the underlying data directory; None: same as ``data``

    @property
    def source_data(self) -> DataDir:
        """The un-viewed data directory: the base pre-trains on it, whatever the domain space."""
        return self.data_dir if self.data_dir is not None else self.data

    @property
    def num_domains(self) -> int:
        return len(self.domains)

    def field_of(self, domain: str) -> str:
        return self.data.domain(domain).field

    def base_recipe(self) -> Any:
        from mixagent.proxy.base_model import BaseRecipe

        return BaseRecipe(self.source_data, tuple(self.pretrain_domains), self.spec.model,
                          self.spec.pretrain, self.spec.cpt.seq_len, self.spec.seed)


def as_spec(spec: EnvSpec | str | Path) -> EnvSpec:
    return spec if isinstance(spec, EnvSpec) else load_env_spec(spec)


def _open_data(spec: EnvSpec) -> DataDir:
    src = spec.origin
    if spec.data.builtin is not None:
        try:
            from mixagent.data.builtin import build_builtin
        except ImportError:
            raise ConfigError(f"{src}: data.builtin: the built-in corpus is not available in this "
                              "installation; use data.path with a data directory") from None
        from mixagent.utils.paths import cache_dir

        key = (str(cache_dir()), spec.data.builtin)
        try:
            if key not in _builtin_dirs:  # checking the corpus is up to date scans the sources
                _builtin_dirs[key] = build_builtin(size=spec.data.builtin)
            return DataDir(_builtin_dirs[key])
        except DataError as err:
            raise ConfigError(f"{src}: data.builtin: {err}") from None
    path = Path(spec.data.path or "").expanduser()
    if not path.is_absolute():
        path = spec.root / path
    try:
        return DataDir(path)
    except DataError as err:
        raise ConfigError(f"{src}: data.path: {err}") from None


def resolve_spec(spec: EnvSpec | str | Path) -> ResolvedEnv:
    """Check ``spec`` against its data directory and model library (see module docstring)."""
    from mixagent.proxy.model import build_hf_config, check_model_config

    spec = as_spec(spec)
    src = spec.origin
    data_dir = _open_data(spec)
    data = _apply_domain_space(spec, data_dir)
    fields = [f.name for f in data.manifest.fields]
    for key in ("source_field", "target_field"):
        name = getattr(spec, key)
        if name not in fields:
            raise ConfigError(f"{src}: {key}: unknown field {name!r}; the data directory has "
                              f"{', '.join(fields)}")
    if spec.source_field == spec.target_field:
        raise ConfigError(f"{src}: target_field: must differ from source_field "
                          f"({spec.source_field!r})")
    in_fields = [d.name for d in data.domains if d.field == spec.source_field] + \
                [d.name for d in data.domains if d.field == spec.target_field]
    if spec.domains is None:
        domains = in_fields
    else:
        domains = list(spec.domains)
        for i, name in enumerate(domains):
            if name not in in_fields:
                where = "is not a domain of the data directory"
                if data is not data_dir:
                    where = "is not a domain of the spec's domain_space"
                if name in data.domain_names:
                    where = f"belongs to field {data.domain(name).field!r}, not to " \
                            f"{spec.source_field!r} or {spec.target_field!r}"
                raise ConfigError(f"{src}: domains[{i}]: {name!r} {where}; choose from "
                                  f"{', '.join(in_fields)}")
        if len(set(domains)) != len(domains):
            raise ConfigError(f"{src}: domains: a domain is listed twice: {domains}")
    is_target = np.array([data.domain(d).field == spec.target_field for d in domains])
    if not is_target.any() or is_target.all():
        raise ConfigError(f"{src}: domains: need at least one domain of the source field "
                          f"{spec.source_field!r} and one of the target field "
                          f"{spec.target_field!r}, got {domains}")
    if isinstance(data, DomainView):
        _check_view_sizes(spec, data, domains)
    k = len(domains)
    if spec.action.floor * k >= 1.0:
        raise ConfigError(f"{src}: action.floor: {spec.action.floor} × {k} domains must be below 1 "
                          f"(at most {1.0 / k:.4g})")
    kinds = {b.name: b.kind for b in data.benchmarks}
    for i, t in enumerate(spec.eval.tasks):
        if t.name not in kinds:
            raise ConfigError(f"{src}: eval.tasks[{i}].name: unknown benchmark {t.name!r}; the "
                              f"data directory has {', '.join(sorted(kinds)) or 'no benchmarks'}")
    _check_terms(spec, {t.name: kinds[t.name] for t in spec.eval.tasks})
    tok = data.manifest.tokenizer
    hf_config = build_hf_config(spec.model, tok.vocab_size, spec.cpt.seq_len, tok.eos_token_id,
                                where=f"{src}: model")
    check_model_config(hf_config, where=f"{src}: model")
    pretrain_domains = [d.name for d in data_dir.domains_of_field(spec.source_field)]
    return ResolvedEnv(spec, data, domains, is_target, pretrain_domains, hf_config,
                       data_dir if data is not data_dir else None)


def _apply_domain_space(spec: EnvSpec, data: DataDir) -> DataDir:
    """The spec's domain space as a view over ``data`` (``data`` itself when there is none)."""
    space = spec.domain_space
    if space is None or (not space.groups and space.split == 1):
        return data
    try:
        return DomainView(data, space.groups, space.split)
    except DomainSpaceError as err:
        raise ConfigError(f"{spec.origin}: domain_space.{err.key}: {err.message}") from None


def _check_view_sizes(spec: EnvSpec, data: DomainView, domains: list[str]) -> None:
    """Every virtual domain in play needs a training and a held-out sequence of ``seq_len``."""
    seq = spec.cpt.seq_len
    space = spec.domain_space
    assert space is not None
    for name in domains:
        d = data.domain(name)
        for split, n in (("train", d.train_tokens), ("eval", d.eval_tokens)):
            if n >= seq:
                continue
            if space.split > 1:
                raise ConfigError(
                    f"{spec.origin}: domain_space.split: part {name!r} has {n} {split} tokens, "
                    f"fewer than one sequence of cpt.seq_len={seq}; use a smaller split, a "
                    "shorter seq_len, or group small domains first")
            raise ConfigError(
                f"{spec.origin}: domain_space.groups: domain {name!r} has {n} {split} tokens, "
                f"fewer than one sequence of cpt.seq_len={seq}")


def _check_terms(spec: EnvSpec, tasks: dict[str, str]) -> None:
    """Every reward term is ``loss`` or ``<benchmark>.<metric>`` of an evaluated benchmark, with
    a metric its kind reports (``tasks``: evaluated benchmark -> kind)."""
    for key in ("source_terms", "target_terms"):
        terms = getattr(spec.reward, key)
        if not terms or sum(terms.values()) <= 0:
            raise ConfigError(f"{spec.origin}: reward.{key}: needs at least one term with a "
                              "positive weight")
        for name, weight in terms.items():
            where = f"{spec.origin}: reward.{key}.{name}"
            if weight < 0:
                raise ConfigError(f"{where}: weight {weight} is negative")
            if name == "loss":
                continue
            task, _, metric = name.rpartition(".")
            if metric not in TERM_METRICS or not task:
                raise ConfigError(f"{where}: a term is 'loss' or '<benchmark>.<metric>' with "
                                  f"metric {', '.join(TERM_METRICS)}")
            if task not in tasks:
                raise ConfigError(f"{where}: task {task!r} is not evaluated; add the benchmark "
                                  f"to eval.tasks (evaluated: {', '.join(sorted(tasks)) or 'none'})")
            allowed = BENCHMARK_METRICS[tasks[task]]
            if metric not in allowed:
                raise ConfigError(f"{where}: {task!r} is a {tasks[task]!r} benchmark; its "
                                  f"metrics are {', '.join(allowed)}")


def build_engine(resolved: ResolvedEnv, progress: bool | None = None) -> Any:
    """The proxy engine for a resolved spec, pre-training (and caching) the base if needed."""
    from mixagent.proxy.base_model import ensure_base
    from mixagent.proxy.engine import ProxyEngine

    spec = resolved.spec
    base = ensure_base(resolved.base_recipe(), spec.runtime, progress=progress)
    return ProxyEngine(resolved.data, resolved.domains, base, spec.cpt, spec.eval, spec.runtime)
