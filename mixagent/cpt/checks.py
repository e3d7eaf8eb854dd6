"""Checks that a model directory, a data directory and a policy belong together.

Mismatches either stop the run with an error that says what to fix (no tokenizer, another
tokenizer, missing domains, a vocabulary too small) or are reported and handled (a policy
trained on other domain names or another number of domains: the agent is per-domain and
permutation-equivariant, so it acts on any domain space — the run records the difference).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mixagent.data.manifest import BENCHMARK_METRICS, DataDir
from mixagent.data.space import DomainSpace
from mixagent.data.tokenizer import tokenizer_hash
from mixagent.errors import ConfigError
from mixagent.policies.protocol import MixingPolicy

log = logging.getLogger(__name__)


def check_model_dir(model_dir: str | Path, data: DataDir) -> dict[str, Any]:
    """The model's ``config.json`` after checking its tokenizer against the data's."""
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: not a Hugging Face model directory (no config.json); pass the "
                          "folder written by save_pretrained or 'mixagent model pretrain'")
    if not (path / "tokenizer.json").is_file():
        raise ConfigError(
            f"{path}: the model directory has no tokenizer (tokenizer.json); mixagent must check "
            "that the data was tokenized with the model's tokenizer. Save the tokenizer beside the "
            "model (tokenizer.save_pretrained(DIR)) and build the data with it: in the build "
            "config, 'tokenizer: {path: DIR}' instead of 'train:', then 'mixagent data build "
            "CONFIG --out NEW_DATA' (docs/DATA.md)")
    model_hash = tokenizer_hash(path)
    data_hash = data.manifest.tokenizer.hash
    if model_hash != data_hash:
        raise ConfigError(
            f"tokenizer mismatch: the model in {path} has tokenizer {model_hash[:12]} but the data "
            f"directory {data.path} was tokenized with {data_hash[:12]}; the token ids would mean "
            "different things. Rebuild the data with the model's tokenizer: in the build config "
            f"set 'tokenizer: {{path: {path}}}' (instead of 'train:') and run 'mixagent data build "
            "CONFIG --out NEW_DATA' (docs/DATA.md), then pass --data NEW_DATA")
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    vocab = int(config.get("vocab_size", 0))
    if vocab < data.manifest.tokenizer.vocab_size:
        raise ConfigError(f"{path}: vocab_size {vocab} is smaller than the tokenizer's "
                          f"{data.manifest.tokenizer.vocab_size}")
    return config


def select_domains(data: DataDir, domains: Sequence[str] | None, fields: Sequence[str] | None
                   ) -> list[str]:
    """The run's domains in action order: explicit names, the domains of ``fields``, or all."""
    if domains:
        missing = [d for d in domains if d not in data.domain_names]
        if missing:
            raise ConfigError(f"domains {missing} are not in the data directory {data.path} "
                              f"(it has {', '.join(data.domain_names)})")
        if len(set(domains)) != len(domains):
            raise ConfigError(f"a domain is listed twice: {list(domains)}")
        names = list(domains)
    elif fields:
        names = [d.name for f in fields for d in data.domains_of_field(f)]
    else:
        names = list(data.domain_names)
    roles = {data.domain(d).role for d in names}
    if roles != {"source", "target"}:
        raise ConfigError(f"a CPT mixture needs source and target domains; {names} are all "
                          f"{roles.pop() if roles else 'missing'}")
    return names


def domain_space(data: DataDir, names: Sequence[str]) -> DomainSpace:
    """The run's domain space: the manifest's fields, roles and token counts (a CPT run has no
    env spec, so roles are the data's own)."""
    return DomainSpace.from_data(data, names)


def policy_mismatch(policy: MixingPolicy, space: DomainSpace) -> list[str]:
    """How the run's domain space differs from the spaces the policy was trained on (notes for
    the summary; the equivariant agent acts on any space, so these are not errors)."""
    trained = policy.provenance.get("trained_on") or []
    if not trained:
        return []
    names = set(space.names)
    if any(set(t.get("names", [])) == names for t in trained):
        return []
    if len(trained) > 1:  # a family's agent: one note, not one per sampled scenario
        counts = sorted({len(t.get("names", [])) for t in trained})
        where = ", ".join(sorted({str(t.get("name", "")) for t in trained}))
        notes = [f"policy trained on {len(trained)} other domain spaces ({where}; "
                 f"{counts[0]}–{counts[-1]} domains), this run has {len(names)}"]
    else:
        seen = set(trained[0].get("names", []))
        if len(seen) != len(names):
            notes = [f"policy trained on {len(seen)} domains ({trained[0].get('name', '')}), this run "
                     f"has {len(names)}"]
        else:
            notes = [f"policy trained on other domain names ({sorted(seen)[:4]}...), this run has "
                     f"{sorted(names)[:4]}..."]
    for n in notes:
        log.warning("%s; the per-domain agent is applied unchanged", n)
    return notes


def check_eval(data: DataDir, tasks: Sequence[str], terms: Sequence[str]) -> None:
    """Benchmarks to score must exist, and reward terms may only use scored benchmarks with a
    metric of their kind (checked before training: a failure inside the first decision would
    stop rank 0 mid-run)."""
    known = {b.name: b for b in data.benchmarks}
    for name in tasks:
        if name not in known:
            raise ConfigError(f"unknown benchmark {name!r}; the data directory has "
                              f"{', '.join(sorted(known)) or 'no benchmarks'}")
    for term in terms:
        if term == "loss":
            continue
        task, _, metric = term.rpartition(".")
        metrics = BENCHMARK_METRICS[known[task].kind] if task in known else ()
        if task not in tasks or metric not in metrics:
            allowed = ", ".join(f"{k}: {'|'.join(m)}" for k, m in BENCHMARK_METRICS.items())
            raise ConfigError(f"reward term {term!r}: use 'loss' or '<benchmark>.<metric>' with a "
                              f"benchmark that is scored (--task) and a metric of its kind ({allowed}); "
                              f"scored: {', '.join(tasks) or 'none'}")
