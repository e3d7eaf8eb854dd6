"""The data layer: corpora in, a *domain space* of per-domain token shards out.

A data directory holds ``manifest.json`` (:class:`~mixagent.data.manifest.Manifest`), a
``tokenizer/`` directory loadable by ``transformers.AutoTokenizer``, one memory-mapped token file
per domain and split under ``shards/``, and optional task files under ``tasks/`` (e.g. math
problems checked by exact match). :class:`~mixagent.data.manifest.DataDir` opens one;
:class:`~mixagent.data.sampler.MixtureSampler` draws training sequences from it by domain weights;
:class:`~mixagent.data.views.DomainView` presents it with grouped or split domains (nothing is
rewritten on disk; the base model stays the same).
"""

from mixagent.data.manifest import DataDir, DomainInfo, FieldInfo, Manifest, TaskInfo
from mixagent.data.views import DomainView

__all__ = ["DataDir", "DomainInfo", "DomainView", "FieldInfo", "Manifest", "TaskInfo"]
