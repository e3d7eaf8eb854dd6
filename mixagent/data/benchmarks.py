"""Benchmarks in a data directory: stored items, and keeping them out of the training data.

A benchmark is what a practitioner measures a CPT run by: question/answer items (``qa``) or
held-out documents (``text``). It is only a measure if the model never trained on it, so every
corpus document that shares a long word n-gram with a benchmark item is *decontaminated*:

* at build time (:class:`~mixagent.data.writer.DataDirWriter` with benchmarks declared) it is
  dropped from both splits and counted per benchmark and domain in the manifest;
* for a benchmark added to an existing directory
  (:func:`~mixagent.data.build.add_benchmarks`, ``mixagent data add-benchmark``) the shards are not rewritten: the documents are decoded from
  the shards, counted, recorded as still present, and the user is told to rebuild (or, with
  ``strict``, the benchmark is refused).

Words are lowercased runs of letters and digits, so whitespace and punctuation changes do not
hide a copy. The index holds the benchmark's n-grams (small); corpus documents are streamed one
at a time, so memory does not grow with the corpus.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixagent.data.manifest import DataDir, OverlapInfo
from mixagent.errors import DataError
from mixagent.utils.io import atomic_text_file, sha256_file

logger = logging.getLogger(__name__)

BENCHMARK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
BENCHMARK_DIR = "benchmarks"
_WORD = re.compile(r"\w+")
_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd: invertible mod 2^64 (fixed: no run-to-run change)
_INV = np.uint64(pow(int(_BASE), -1, 2**64))


def words(text: str) -> list[str]:
    """The words decontamination compares: lowercased runs of letters/digits (``\\w+``)."""
    return _WORD.findall(text.lower())


def item_text(kind: str, item: Mapping[str, str]) -> str:
    """The text of an item that must not appear in training: prompt and answer, or the text."""
    return item["text"] if kind == "text" else f"{item['prompt']} {item['answer']}"


class NgramIndex:
    """The word n-grams of benchmark items, and which benchmarks a document shares one with.

    Each item contributes its ``ngram``-word windows; an item shorter than that but at least
    ``min_item_words`` long contributes itself whole; shorter ones are not checked (counted in
    :meth:`add`'s result). Lookup maps a document's words to ids of the benchmark vocabulary (a
    word no item uses breaks every window through it), hashes all its windows at once (a
    polynomial hash from prefix sums, arithmetic mod 2^64, so every window length costs two
    vector operations), and confirms each hash hit against the exact n-gram, so a hash
    collision never drops a document.
    """

    def __init__(self, ngram: int = 13, min_item_words: int = 8):
        if not 1 <= min_item_words <= ngram:
            raise ValueError(f"need 1 <= min_item_words ({min_item_words}) <= ngram ({ngram})")
        self.ngram = ngram
        self.min_item_words = min_item_words
        self.names: list[str] = []
        self._vocab: dict[str, int] = {}
        self._grams: dict[int, dict[int, list[tuple[tuple[int, ...], int]]]] = {}
        self._sorted: dict[int, np.ndarray] = {}
        self._pow = np.ones(1, dtype=np.uint64)  # _BASE**i mod 2^64
        self._inv = np.ones(1, dtype=np.uint64)  # its inverse (the base is odd: invertible)

    def __bool__(self) -> bool:
        return bool(self._grams)

    def add(self, name: str, texts: Iterable[str]) -> int:
        """Index one benchmark's item texts; returns how many items were too short to check."""
        if name in self.names:
            raise ValueError(f"benchmark {name!r} is indexed twice")
        b = len(self.names)
        self.names.append(name)
        unchecked = 0
        for text in texts:
            ws = words(text)
            if len(ws) < self.min_item_words:
                unchecked += 1
                continue
            ids = np.array([self._vocab.setdefault(w, len(self._vocab) + 1) for w in ws], np.int64)
            n = min(self.ngram, len(ids))
            table = self._grams.setdefault(n, {})
            wins = np.lib.stride_tricks.sliding_window_view(ids, n)
            for h, win in zip(self._hashes(ids, n).tolist(), wins.tolist(), strict=True):
                entry = (tuple(win), b)
                bucket = table.setdefault(h, [])
                if entry not in bucket:
                    bucket.append(entry)
            self._sorted.pop(n, None)
        return unchecked

    def _powers(self, m: int) -> None:
        """Extend the power tables to ``m`` entries (doubling, so it happens rarely)."""
        if self._pow.size >= m:
            return
        size = max(m, 2 * self._pow.size)
        self._pow = np.concatenate([[np.uint64(1)], np.cumprod(np.full(size - 1, _BASE,
                                                                       dtype=np.uint64))])
        self._inv = np.concatenate([[np.uint64(1)], np.cumprod(np.full(size - 1, _INV,
                                                                       dtype=np.uint64))])

    def _hashes(self, ids: np.ndarray, n: int) -> np.ndarray:
        """Hash of every ``n``-word window of ``ids``: sum_j ids[i+j] * B^j (mod 2^64)."""
        self._powers(ids.size + 1)
        prefix = np.zeros(ids.size + 1, dtype=np.uint64)
        np.cumsum(ids.astype(np.uint64) * self._pow[: ids.size], out=prefix[1:])
        return (prefix[n:] - prefix[:-n]) * self._inv[: ids.size - n + 1]

    def match(self, text: str) -> set[int]:
        """Indices (into :attr:`names`) of the benchmarks ``text`` shares an n-gram with."""
        if not self._grams:
            return set()
        ws = words(text)
        if len(ws) < self.min_item_words:
            return set()
        get = self._vocab.get
        ids = np.fromiter((get(w, 0) for w in ws), dtype=np.int64, count=len(ws))
        unknown = np.zeros(ids.size + 1, dtype=np.int64)
        np.cumsum(ids == 0, out=unknown[1:])
        if unknown[-1] == ids.size:
            return set()
        hits: set[int] = set()
        for n, table in self._grams.items():
            if ids.size < n:
                continue
            ok = unknown[n:] == unknown[:-n]  # no word outside the benchmarks' vocabulary
            if not ok.any():
                continue
            hashes = self._hashes(ids, n)
            if n not in self._sorted:
                self._sorted[n] = np.array(sorted(table), dtype=np.uint64)
            known = self._sorted[n]  # searchsorted, not np.isin: that re-sorts the table per call
            at = np.minimum(np.searchsorted(known, hashes), known.size - 1)
            for c in np.flatnonzero(ok & (known[at] == hashes)).tolist():
                gram = tuple(ids[c : c + n].tolist())
                hits.update(b for g, b in table[int(hashes[c])] if g == gram)
        return hits


def check_items(name: str, kind: str, items: Sequence[Mapping[str, Any]]) -> None:
    """Stored rows must be what the evaluator reads: string prompt/answer, or string text."""
    keys = ("text",) if kind == "text" else ("prompt", "answer")
    if kind not in ("qa", "text"):
        raise DataError(f"benchmark {name!r}: unknown kind {kind!r}; use 'qa' or 'text'")
    if not items:
        raise DataError(f"benchmark {name!r} has no items")
    for i, item in enumerate(items):
        if not all(isinstance(item.get(k), str) for k in keys):
            raise DataError(f"benchmark {name!r}: item {i} needs string {' and '.join(keys)}")


def write_benchmark_file(root: Path, name: str, items: Iterable[Mapping[str, Any]]) -> tuple[str, str]:
    """Store items as ``benchmarks/<name>.jsonl`` (atomically); returns (relative path, sha256)."""
    if not BENCHMARK_NAME.match(name):
        raise DataError(f"benchmark name {name!r} must start with a letter or digit and hold only "
                        "letters, digits, '_', '-'")
    rel = f"{BENCHMARK_DIR}/{name}.jsonl"
    path = root / rel
    with atomic_text_file(path) as f:
        for item in items:
            f.write(json.dumps(dict(item), ensure_ascii=False) + "\n")
    return rel, sha256_file(path)


def overlap_info(index: NgramIndex, b: int, by_domain: Mapping[str, int], unchecked: int,
                 removed: bool) -> OverlapInfo:
    """The manifest's record of benchmark ``b``'s overlap with the corpus."""
    counts = {d: int(n) for d, n in sorted(by_domain.items()) if n}
    return OverlapInfo(ngram=index.ngram, min_item_words=index.min_item_words,
                       documents=sum(counts.values()), by_domain=counts, removed=removed,
                       unchecked_items=unchecked)


def log_overlap(name: str, info: OverlapInfo, where: str) -> None:
    """Never silent: say how many documents overlapped, and whether they are gone."""
    if info.unchecked_items:
        logger.info("benchmark %r: %d items have fewer than %d words and are not checked for "
                    "overlap", name, info.unchecked_items, info.min_item_words)
    if not info.documents:
        logger.info("benchmark %r: no document of %s shares a %d-word n-gram with it",
                    name, where, info.ngram)
        return
    domains = ", ".join(f"{d}: {n}" for d, n in info.by_domain.items())
    if info.removed:
        logger.warning("benchmark %r: dropped %d documents of %s that share a %d-word n-gram with "
                       "its items (%s)", name, info.documents, where, info.ngram, domains)
    else:
        logger.warning("benchmark %r: %d documents of %s share a %d-word n-gram with its items "
                       "(%s) and are still in its shards; add the benchmark to the build config's "
                       "'benchmarks:' and rebuild to drop them", name, info.documents, where,
                       info.ngram, domains)


# -- an existing data directory ----------------------------------------------------------------
def iter_shard_documents(tokens: np.ndarray, eos: int, chunk: int = 1 << 20) -> Iterator[np.ndarray]:
    """The documents of a shard (token ids without their EOS), read ``chunk`` tokens at a time.

    A shard is its documents' ids, each followed by EOS (:mod:`~mixagent.data.shards`); only a
    chunk plus one unfinished document is in memory at a time.
    """
    carry = np.zeros(0, dtype=tokens.dtype)
    for start in range(0, tokens.shape[0], chunk):
        block = np.concatenate([carry, np.asarray(tokens[start : start + chunk])])
        ends = np.flatnonzero(block == eos)
        prev = 0
        for e in ends.tolist():
            yield block[prev:e]
            prev = e + 1
        carry = block[prev:]
    if carry.size:
        yield carry


def count_overlaps(data: DataDir, index: NgramIndex, batch: int = 256) -> list[Counter[str]]:
    """Per benchmark of ``index``: how many documents of each domain (both splits) share an
    n-gram with it, decoding the shards document by document."""
    from mixagent.data.tokenizer import load_tokenizer
    from mixagent.utils.progress import Progress

    tok = load_tokenizer(data.tokenizer_dir)
    eos = data.manifest.tokenizer.eos_token_id
    counts: list[Counter[str]] = [Counter() for _ in index.names]

    def check(domain: str, docs: list[list[int]]) -> None:
        for text in tok.decode_batch(docs, skip_special_tokens=False):
            for b in index.match(text):
                counts[b][domain] += 1

    with Progress(len(data.domains) * 2, "checking overlap", "shard", logger=logger) as bar:
        for d in data.domains:
            for split in ("train", "eval"):
                docs: list[list[int]] = []
                for doc in iter_shard_documents(data.tokens(d.name, split), eos):
                    docs.append(doc.tolist())
                    if len(docs) >= batch:
                        check(d.name, docs)
                        docs = []
                if docs:
                    check(d.name, docs)
                bar.update(1)
    return counts
