"""The build plan: every input resolved and hashed, and the content hash that decides reuse.

The content hash is what makes re-running a pipeline free and a changed byte anywhere a rebuild;
its recipe lives here alone, with the version and the later-added keys it must stay stable for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixagent.data.build.benchmarks import ResolvedBenchmark, resolve_benchmark
from mixagent.data.build.config import BuildConfig, DecontaminationConfig
from mixagent.data.build.inputs import (
    ResolvedInput,
    display_path,
    hash_file,
    hash_tokenizer_dir,
    input_format,
    resolve_files,
    resolve_hub_revision,
)
from mixagent.utils.io import sha256_json

# Bumped whenever the bytes a build writes for the same inputs would change (tokenization,
# split, shard layout): part of the content hash, so old outputs are rebuilt, never misread.
DATA_FORMAT_VERSION = 1


@dataclass
class BuildPlan:
    """Everything the content hash covers, resolved before any expensive work."""

    config: BuildConfig
    base_dir: Path
    inputs: list[ResolvedInput]
    tokenizer_dir: Path | None
    tokenizer_source_hash: str | None
    benchmarks: list[ResolvedBenchmark] = field(default_factory=list)
    content_hash: str = ""
    provenance_inputs: list[dict[str, Any]] = field(default_factory=list)


def plan_build(
    config: BuildConfig, base_dir: str | Path | None = None, *, exclude: str | Path | None = None
) -> BuildPlan:
    """Resolve and hash every input, and compute the build's content hash.

    The hash covers the normalised config (defaults filled in, so spelling a default out changes
    nothing), each input file's name and sha256, the adopted tokenizer's files and
    :data:`DATA_FORMAT_VERSION`. Paths are taken relative to ``base_dir`` (the config file's
    folder), so moving a project folder as a whole keeps its builds valid. Glob matches inside
    ``exclude`` (the output directory) are skipped, so a broad glob never eats its own output.
    """
    base = Path(base_dir).resolve() if base_dir is not None else Path.cwd()
    skip = Path(exclude).resolve() if exclude is not None else None
    inputs: list[ResolvedInput] = []
    for fname, fcfg in config.fields.items():
        for i, icfg in enumerate(fcfg.inputs):
            label = f"fields.{fname}.inputs[{i}]"
            if icfg.hub is not None:
                inputs.append(
                    ResolvedInput(fname, i, icfg, None, [], resolve_hub_revision(icfg, label))
                )
                continue
            paths = resolve_files(icfg, label, base, skip)
            fmt = input_format(icfg, label, paths)
            inputs.append(ResolvedInput(fname, i, icfg, fmt, [hash_file(p) for p in paths]))
    tok_dir = tok_hash = None
    if config.tokenizer.path is not None:
        tok_dir = Path(config.tokenizer.path).expanduser()
        tok_dir = tok_dir if tok_dir.is_absolute() else base / tok_dir
        tok_hash = hash_tokenizer_dir(tok_dir)
    benchmarks = [resolve_benchmark(b, i, base) for i, b in enumerate(config.benchmarks)]
    plan = BuildPlan(config, base, inputs, tok_dir, tok_hash, benchmarks)
    plan.provenance_inputs = [
        {
            "input": r.label,
            "field": r.field,
            "format": r.format,
            "hub": r.config.hub,
            "hub_revision": r.hub_revision,
            "files": [{"path": str(f.path), "sha256": f.sha256, "size": f.size} for f in r.files],
        }
        for r in inputs
    ]
    hashed: dict[str, Any] = {
        "data_format_version": DATA_FORMAT_VERSION,
        "config": _hashed_config(config),
        "inputs": [
            [
                r.label,
                r.hub_revision,
                [[display_path(f.path, base), f.sha256, f.size] for f in r.files],
            ]
            for r in inputs
        ],
        "tokenizer_source": tok_hash,
    }
    if benchmarks:  # only then: a build without benchmarks keeps the hash it had before them
        hashed["benchmarks"] = [
            [b.label, display_path(b.file.path, base), b.file.sha256, b.file.size]
            for b in benchmarks
        ]
    plan.content_hash = sha256_json(hashed)
    return plan


# Keys added after data format 1, with the default that reproduces what builds did before them:
# left out of the content hash at that default, so existing outputs stay valid. (A domain with no
# held-out document was an error before, so the default min_eval_documents=1 changes no output
# that exists. No benchmarks means no decontamination, which is what builds did before them.)
_LATER_TOP_KEYS: dict[str, Any] = {
    "min_eval_tokens": 0,
    "min_eval_documents": 1,
    "benchmarks": [],
    "decontamination": DecontaminationConfig().model_dump(mode="json"),
}
_LATER_CLUSTER_KEYS: dict[str, Any] = {"names": None}


def _hashed_config(config: BuildConfig) -> dict[str, Any]:
    """The normalised config as the content hash sees it (see :data:`_LATER_TOP_KEYS`)."""
    dump = config.model_dump(mode="json")
    for key, default in _LATER_TOP_KEYS.items():
        if dump.get(key) == default:
            dump.pop(key)
    for fcfg in dump["fields"].values():
        for inp in fcfg["inputs"]:
            cluster = inp["domain"].get("cluster")
            for key, default in _LATER_CLUSTER_KEYS.items():
                if cluster is not None and cluster.get(key) == default:
                    cluster.pop(key)
    return dump
