"""``mixagent data build``: a user's corpora in, a validated data directory out.

A build config (YAML, :class:`BuildConfig`) names *fields* — each a ``source`` (ability to keep)
or ``target`` (ability to gain) — and their inputs: local jsonl/json/parquet/text/arrow/csv files
or a Hugging Face hub dataset, the text column, and how each document gets its *domain* (a metadata
column, a constant, or unsupervised clustering). :func:`build_data_dir` then

1. resolves every input file and hashes it, and hashes the normalised config with them: if the
   output already holds a build with that content hash it is reused untouched, so re-running a
   pipeline is free and a changed byte anywhere forces a rebuild;
2. streams the inputs once to draw seeded, bounded samples (for the tokenizer and for fitting the
   clusterers) — only when a tokenizer is trained or an input is clustered;
3. trains a byte-level BPE on the sample or adopts a local HF tokenizer;
4. streams the inputs again and tokenizes them batch by batch through
   :class:`~mixagent.data.writer.DataDirWriter`, which splits eval/train by content hash, checks
   every domain and writes the manifest.

Memory stays flat in the corpus size: inputs are read with ``datasets`` in streaming mode (no Arrow
cache is written; its lock files go to a temporary directory), samples are bounded by the config,
and shards are written as they fill. Everything happens inside
:func:`~mixagent.utils.io.atomic_directory`, so a failure leaves either no output or the previous
good one.

One module per step, in the order a build runs them: ``config`` (the schema), ``inputs`` (files
found and hashed), ``plan`` (the content hash), ``readers`` (streaming reads), ``benchmarks``
(benchmark files read and stored; adding them to a built directory), ``sampling`` (tokenizer and
cluster samples), ``domains`` (a document's domain name) and ``run`` (the orchestration). Import from this package, not from the modules: they may move.
"""

from mixagent.data.build.benchmarks import add_benchmarks, read_benchmark_items, resolve_benchmark
from mixagent.data.build.config import (
    AddBenchmarksConfig,
    BenchmarkConfig,
    BuildConfig,
    ClusterConfig,
    DecontaminationConfig,
    DomainConfig,
    FieldConfig,
    InputConfig,
    TokenizerConfig,
    TrainTokenizerConfig,
    load_build_config,
)
from mixagent.data.build.inputs import infer_format
from mixagent.data.build.plan import DATA_FORMAT_VERSION, BuildPlan, plan_build
from mixagent.data.build.readers import iter_input_batches
from mixagent.data.build.run import build_data_dir, package_versions

__all__ = [
    "DATA_FORMAT_VERSION",
    "AddBenchmarksConfig",
    "BenchmarkConfig",
    "BuildConfig",
    "BuildPlan",
    "ClusterConfig",
    "DecontaminationConfig",
    "DomainConfig",
    "FieldConfig",
    "InputConfig",
    "TokenizerConfig",
    "TrainTokenizerConfig",
    "add_benchmarks",
    "build_data_dir",
    "infer_format",
    "iter_input_batches",
    "load_build_config",
    "package_versions",
    "plan_build",
    "read_benchmark_items",
    "resolve_benchmark",
]
