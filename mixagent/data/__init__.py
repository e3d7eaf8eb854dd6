"""The data layer: corpora in, a *domain space* of per-domain token shards out.

A data directory holds ``manifest.json`` (:class:`~mixagent.data.manifest.Manifest`), a
``tokenizer/`` directory loadable by ``transformers.AutoTokenizer``, one memory-mapped token file
per domain and split under ``shards/``, and optional benchmarks under ``benchmarks/`` and
``tasks/`` (question/answer items scored by answer log-probability and exact match, or held-out
text scored by loss; see :class:`~mixagent.data.manifest.BenchmarkInfo`). :class:`~mixagent.data.manifest.DataDir` opens one;
:class:`~mixagent.data.sampler.MixtureSampler` draws training sequences from it by domain weights;
:class:`~mixagent.data.views.DomainView` presents it with grouped or split domains (nothing is
rewritten on disk; the base model stays the same).
"""

from mixagent.data.manifest import BenchmarkInfo, DataDir, DomainInfo, FieldInfo, Manifest, TaskInfo
from mixagent.data.views import DomainView

__all__ = ["BenchmarkInfo", "DataDir", "DomainInfo", "DomainView", "FieldInfo", "Manifest", "TaskInfo"]
