"""The build itself: reuse or rebuild ``out`` atomically, then sample, tokenize and write.

Orchestration only; what it orchestrates lives beside it (``plan``, ``sampling``, ``readers``,
``domains``). Everything happens inside :func:`~mixagent.utils.io.atomic_directory`, so a failure
leaves either no output or the previous good one.
"""

from __future__ import annotations

import logging
import platform
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from mixagent.config import validate_config
from mixagent.data.build.benchmarks import read_benchmark_items
from mixagent.data.build.config import BuildConfig, load_build_config
from mixagent.data.build.domains import (
    cluster_domain,
    describe_domain,
    domain_names,
    register_domain,
)
from mixagent.data.build.inputs import ResolvedInput
from mixagent.data.build.plan import DATA_FORMAT_VERSION, BuildPlan, plan_build
from mixagent.data.build.readers import iter_input_batches
from mixagent.data.build.sampling import sample_inputs
from mixagent.data.clustering import TextClusterer
from mixagent.data.manifest import MANIFEST_NAME, DataDir, Manifest
from mixagent.errors import DataError
from mixagent.utils.io import atomic_directory, remove_stale_temporaries
from mixagent.utils.progress import Progress

logger = logging.getLogger(__name__)


def package_versions() -> dict[str, str]:
    """Versions of what decides the bytes of a build (recorded in the manifest's provenance)."""
    from mixagent.version import __version__

    versions = {"mixagent": __version__, "python": platform.python_version()}
    for pkg in ("datasets", "tokenizers", "pyarrow", "transformers", "scikit-learn", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return versions


def _is_mixagent_data_dir(path: Path) -> bool:
    """Whether ``path`` looks like a data directory we wrote (and so may be replaced)."""
    import json

    try:
        raw = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and {"schema_version", "content_hash", "domains"} <= raw.keys()


def _check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a directory; choose another output path")
    if out.is_dir() and any(out.iterdir()) and not _is_mixagent_data_dir(out):
        raise DataError(
            f"--out {out} exists and is not a mixagent data directory "
            f"(no mixagent {MANIFEST_NAME}); "
            "refusing to replace it — choose another output path or empty it yourself"
        )


def _up_to_date(out: Path, content_hash: str) -> Manifest | None:
    if not (out / MANIFEST_NAME).is_file():
        return None
    try:
        manifest = DataDir(out).manifest
    except DataError as err:
        logger.warning("existing %s is not a valid data directory (%s); rebuilding it", out, err)
        return None
    return manifest if manifest.content_hash == content_hash else None


def _coerce_config(
    config_or_path: BuildConfig | Mapping[str, Any] | str | Path, base_dir: str | Path | None
) -> tuple[BuildConfig, Path, str | None]:
    if isinstance(config_or_path, BuildConfig):
        return config_or_path, Path(base_dir or Path.cwd()).resolve(), None
    if isinstance(config_or_path, Mapping):
        cfg = validate_config(BuildConfig, dict(config_or_path), source="build config")
        return cfg, Path(base_dir or Path.cwd()).resolve(), None
    path = Path(config_or_path)
    cfg = load_build_config(path)
    return cfg, Path(base_dir or path.resolve().parent).resolve(), str(path.resolve())


def build_data_dir(
    config_or_path: BuildConfig | Mapping[str, Any] | str | Path,
    out: str | Path,
    *,
    force: bool = False,
    base_dir: str | Path | None = None,
) -> Path:
    """Build (or reuse) the data directory ``out`` for a build config; returns ``out``.

    ``config_or_path`` is a :class:`BuildConfig`, a mapping, or a YAML file; relative input paths
    are resolved against ``base_dir`` (default: the YAML file's folder, else the working
    directory). An existing ``out`` holding a build with the same content hash is reused as is
    unless ``force``; any other mixagent data directory there is replaced atomically, and a
    non-empty directory that is not one is never touched (:class:`DataError`).
    """
    config, base, config_file = _coerce_config(config_or_path, base_dir)
    out = Path(out)
    _check_output(out)
    remove_stale_temporaries(out)  # also when the output is reused: a killed build's leftovers
    plan = plan_build(config, base, exclude=out)
    if not force and (existing := _up_to_date(out, plan.content_hash)) is not None:
        logger.info(
            "reusing %s: it already holds %r built from the same config and inputs "
            "(content hash %s)",
            out,
            existing.name,
            plan.content_hash[:12],
        )
        return out
    logger.info("building %s (content hash %s)", out, plan.content_hash[:12])
    roles = {f.role for f in config.fields.values()}
    if roles != {"source", "target"}:
        logger.warning(
            "the config has only %s fields; mixing needs a source and a target field", roles.pop()
        )
    with (
        tempfile.TemporaryDirectory(prefix="mixagent-datasets-") as cache_dir,
        atomic_directory(out, replace=True) as tmp,
    ):
        manifest = _build_into(tmp, plan, cache_dir, config_file)
    logger.info(
        "built %s: %d domains, %s train tokens",
        out,
        len(manifest.domains),
        f"{sum(d.train_tokens for d in manifest.domains):,}",
    )
    return out


def _build_into(root: Path, plan: BuildPlan, cache_dir: str, config_file: str | None) -> Manifest:
    from mixagent.data.tokenizer import adopt_pretrained, train_bpe
    from mixagent.data.writer import DataDirWriter, reliable_eval_tokens

    cfg = plan.config
    tok_sample, cluster_samples = sample_inputs(plan, cache_dir)
    if cfg.tokenizer.train is not None:
        t = cfg.tokenizer.train
        logger.info(
            "training a byte-level BPE (vocab %d) on %d sampled documents",
            t.vocab_size,
            len(tok_sample),
        )
        tok_info = train_bpe(
            tok_sample, t.vocab_size, root / "tokenizer", min_frequency=t.min_frequency
        )
        tok_source: dict[str, Any] = {"kind": "trained-bpe", "sample_documents": len(tok_sample)}
    else:
        assert plan.tokenizer_dir is not None
        tok_info = adopt_pretrained(plan.tokenizer_dir, root / "tokenizer")
        tok_source = {
            "kind": "pretrained",
            "path": str(plan.tokenizer_dir),
            "files_hash": plan.tokenizer_source_hash,
        }
    del tok_sample

    clusterers: dict[str, TextClusterer] = {}
    for inp in plan.inputs:
        cl = inp.config.domain.cluster
        if cl is None:
            continue
        logger.info("clustering %s into %d domains", inp.label, cl.k)
        try:
            clusterers[inp.label] = TextClusterer(
                cl.k,
                seed=cfg.seed,
                n_features=cl.n_features,
                top_terms=cl.top_terms,
                max_chars=cl.max_chars,
                n_init=cl.n_init,
            ).fit(cluster_samples.pop(inp.label))
        except DataError as err:
            raise DataError(f"{inp.label}.domain.cluster: {err}") from None

    writer = DataDirWriter(
        root,
        tok_info,
        eval_fraction=cfg.eval_fraction,
        min_sequence_tokens=cfg.min_sequence_tokens,
        min_eval_tokens=cfg.min_eval_tokens,
        min_eval_documents=cfg.min_eval_documents,
        warn_eval_tokens=reliable_eval_tokens(cfg.min_sequence_tokens),
        ngram=cfg.decontamination.ngram,
        min_item_words=cfg.decontamination.min_item_words,
    )
    for fname, fcfg in cfg.fields.items():
        writer.add_field(fname, fcfg.role, fcfg.description)
    for bench in plan.benchmarks:  # before the documents: overlapping ones are then dropped
        b = bench.config
        items = read_benchmark_items(bench, cache_dir, cfg.batch_size)
        logger.info("benchmark %r (%s, field %s): %d items from %s", b.name, b.kind, b.field,
                    len(items), bench.file.path)
        writer.add_benchmark(b.name, b.field, b.kind, items, description=b.description,
                             source=bench.source(plan.base_dir))
    domains: set[str] = set()
    cluster_owner: dict[str, str] = {}  # cluster domain -> the input it belongs to
    documents: dict[str, int] = {}
    with Progress(None, "tokenizing", "doc", logger=logger) as bar:
        for inp in plan.inputs:
            bar.set_postfix(input=inp.label)
            clusterer = clusterers.get(inp.label)
            if clusterer is not None:  # register every cluster, so an empty one is an error
                for c in range(clusterer.k):
                    name = cluster_domain(inp, c)
                    if name in domains:
                        raise DataError(
                            f"{inp.label}.domain.cluster: its domain {name!r} is also produced "
                            f"by {cluster_owner.get(name, 'another input')}; give the cluster "
                            "another name ('names' or 'prefix')"
                        )
                    register_domain(domains, name, cfg.max_domains, inp)
                    cluster_owner[name] = inp.label
                    writer.add_documents(name, inp.field, [], description=clusterer.describe(c))
            n = 0
            for batch in iter_input_batches(inp, cfg.batch_size, cache_dir):
                names = domain_names(inp, batch, clusterer)
                groups: dict[str, list[str]] = {}
                for name, text in zip(names, batch.texts, strict=True):
                    groups.setdefault(name, []).append(text)
                for name, texts in groups.items():
                    owner = cluster_owner.get(name)
                    if owner is not None and owner != inp.label:
                        raise DataError(
                            f"{inp.label}: its domain {name!r} is also a cluster of {owner}; "
                            "a cluster's domain must be its own — rename the cluster ('names' "
                            "or 'prefix') or this domain"
                        )
                    if name not in domains:
                        register_domain(domains, name, cfg.max_domains, inp)
                    writer.add_documents(name, inp.field, texts, description=describe_domain(inp, name))
                n += len(batch.texts)
                bar.update(len(batch.texts))
            documents[inp.label] = n

    provenance = {
        "builder": "mixagent data build",
        "data_format_version": DATA_FORMAT_VERSION,
        "config_file": config_file,
        "base_dir": str(plan.base_dir),
        "config": cfg.model_dump(mode="json"),
        "inputs": [dict(p, documents=documents[p["input"]]) for p in plan.provenance_inputs],
        "tokenizer_source": tok_source,
        "clusters": {
            label: {
                "k": c.k,
                "domains": [cluster_domain(_input(plan, label), i) for i in range(c.k)],
                "sample_sizes": c.sample_sizes,
                "top_terms": c.terms,
            }
            for label, c in clusterers.items()
        },
        "packages": package_versions(),
    }
    return writer.finish(cfg.name, plan.content_hash, provenance)


def _input(plan: BuildPlan, label: str) -> ResolvedInput:
    """The resolved input a label (``fields.<f>.inputs[i]``) names."""
    return next(i for i in plan.inputs if i.label == label)
