"""Writing a data directory: documents in, shards + tokenizer + manifest out.

Both ``mixagent data build`` (user corpora) and ``mixagent data builtin`` (the embedded corpus)
end in :class:`DataDirWriter`, so every data directory is validated the same way: no empty domain,
no domain too short for one training sequence, a non-empty held-out split, eval disjoint from
train. The writer works inside a temporary directory (see :func:`mixagent.utils.io.atomic_directory`)
so a failed build leaves nothing half-written behind.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import heapq
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixagent.data.benchmarks import (
    NgramIndex,
    check_items,
    item_text,
    log_overlap,
    overlap_info,
    write_benchmark_file,
)
from mixagent.data.manifest import (
    MANIFEST_NAME,
    BenchmarkInfo,
    DomainInfo,
    FieldInfo,
    Manifest,
    TaskInfo,
    TokenizerInfo,
)
from mixagent.data.shards import DTYPES, ShardWriter, dtype_for_vocab
from mixagent.data.tokenizer import load_tokenizer
from mixagent.errors import DataError
from mixagent.utils.io import write_json_atomic

logger = logging.getLogger(__name__)

# The proxy environment scores each domain's held-out loss on this many fixed sequences
# (``EvalSpec.sequences_per_domain``'s default in mixagent.proxy.config).
EVAL_SEQUENCES = 4


def split_key(text: str, salt: str = "") -> int:
    """A document's 64-bit split key: held out iff ``key / 2**64 < eval_fraction``."""
    h = hashlib.blake2b((salt + text).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "little")


def is_eval_document(text: str, eval_fraction: float, salt: str = "") -> bool:
    """Assign a document to the held-out split by a hash of its text.

    Hashing the content (not the position) keeps exact duplicates on the same side of the split,
    so a held-out document never also appears verbatim in training, and the split is stable when
    documents are reordered or added.
    """
    return split_key(text, salt) / 2**64 < eval_fraction


def reliable_eval_tokens(min_sequence_tokens: int) -> int:
    """Held-out tokens below which a domain's held-out loss is too noisy to score on.

    The environment measures each domain on :data:`EVAL_SEQUENCES` fixed held-out sequences; a
    data build knows no env's ``seq_len``, but ``min_sequence_tokens`` is its own notion of one
    sequence. With fewer held-out tokens than that many sequences, the sequences overlap or repeat
    and the domain's score rests on one or two documents, so a reward computed from it is mostly
    noise (the 312-token single-page held-out set of a small cluster was the case in point).
    """
    return EVAL_SEQUENCES * min_sequence_tokens


class _Reserve:
    """The training documents of a domain with the smallest split keys, enough to top up its
    held-out set to a minimum: they are the ones a slightly larger ``eval_fraction`` would have
    held out, so a topped-up split is still a pure function of the documents' text.

    Bounded: it keeps only as many documents as the minimum could need (plus ties: documents
    with the same key, i.e. identical text, are kept or dropped together, so a moved document
    never leaves a verbatim copy in training).
    """

    def __init__(self, tokens: int, documents: int):
        self.need_tokens, self.need_documents = tokens, documents
        self.heap: list[tuple[int, int, int, int]] = []  # (-key, -offset, offset, length)
        self.tokens = 0

    def _covered(self, tokens: int, documents: int) -> bool:
        return tokens >= self.need_tokens and documents >= self.need_documents

    def add(self, key: int, offset: int, length: int) -> None:
        if self.heap and key > -self.heap[0][0] and self._covered(self.tokens, len(self.heap)):
            return  # would be dropped at once
        heapq.heappush(self.heap, (-key, -offset, offset, length))
        self.tokens += length
        while self.heap:
            top = self.heap[0][0]
            group = []
            while self.heap and self.heap[0][0] == top:
                group.append(heapq.heappop(self.heap))
            rest = self.tokens - sum(g[3] for g in group)
            if group and self._covered(rest, len(self.heap)) and self.heap:
                self.tokens = rest
                continue
            for g in group:
                heapq.heappush(self.heap, g)
            break

    def take(self, tokens: int, documents: int) -> list[tuple[int, int]] | None:
        """(offset, length) of the documents to move, in key order; None if too few."""
        items = sorted(self.heap, key=lambda t: (-t[0], t[2]))
        chosen: list[tuple[int, int]] = []
        got = 0
        for i, (nkey, _, offset, length) in enumerate(items):
            if got >= tokens and len(chosen) >= documents and nkey != items[i - 1][0]:
                break
            chosen.append((offset, length))
            got += length
        return chosen if got >= tokens and len(chosen) >= documents else None


def safe_filename(name: str) -> str:
    """A filesystem-safe, still readable file stem for a domain name like 'prose/stdlib-text'."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "__", name).strip("_")
    return stem or "domain"


class DataDirWriter:
    """Tokenizes documents into per-domain train/eval shards inside ``root``.

    ``root`` must already contain the saved tokenizer (described by ``tokenizer_info``). Call
    :meth:`add_documents` any number of times per domain (streams: only one batch is in memory),
    :meth:`add_task` for task sets, then :meth:`finish` to validate and write the manifest.
    Benchmarks (:meth:`add_benchmark`) come before the documents: every document sharing an
    ``ngram``-word n-gram with one of their items is dropped from both splits and counted.
    """

    def __init__(
        self,
        root: str | Path,
        tokenizer_info: TokenizerInfo,
        eval_fraction: float = 0.05,
        min_sequence_tokens: int = 0,
        batch_size: int = 512,
        split_salt: str = "",
        min_eval_tokens: int = 0,
        min_eval_documents: int = 0,
        warn_eval_tokens: int = 0,
        ngram: int = 13,
        min_item_words: int = 8,
    ):
        """``min_eval_tokens`` / ``min_eval_documents``: a domain whose hash split holds out less
        gets more documents moved from its training split (:class:`_Reserve`), or an error if it
        is too small to give both. ``warn_eval_tokens``: a domain holding out fewer tokens than
        this is logged as too small to score reliably (0: no warning). ``ngram`` /
        ``min_item_words``: decontamination against benchmarks (see
        :class:`~mixagent.data.benchmarks.NgramIndex`)."""
        if not 0.0 < eval_fraction < 1.0:
            raise DataError(f"eval_fraction={eval_fraction} must be strictly between 0 and 1")
        self.root = Path(root)
        self.tokenizer_info = tokenizer_info
        self.tokenizer = load_tokenizer(self.root / tokenizer_info.path)
        self.dtype = dtype_for_vocab(tokenizer_info.vocab_size)
        self.eval_fraction = eval_fraction
        self.min_sequence_tokens = min_sequence_tokens
        self.batch_size = batch_size
        self.split_salt = split_salt
        self.min_eval_tokens = min_eval_tokens
        self.min_eval_documents = min_eval_documents
        self.warn_eval_tokens = warn_eval_tokens
        self._reserves: dict[str, _Reserve] = {}
        self._fields: dict[str, FieldInfo] = {}
        self._writers: dict[str, tuple[str, ShardWriter, ShardWriter]] = {}
        self._descriptions: dict[str, str] = {}
        self._tasks: list[TaskInfo] = []
        self._benchmarks: list[tuple[BenchmarkInfo, int | None]] = []  # (info, index position)
        self._index = NgramIndex(ngram, min_item_words)
        self._unchecked: dict[str, int] = {}
        self._overlaps: dict[int, Counter[str]] = {}  # index position -> documents per domain

    def add_field(self, name: str, role: str, description: str = "") -> None:
        if role not in ("source", "target"):
            raise DataError(f"field {name!r}: unknown role {role!r}; use 'source' or 'target'")
        prev = self._fields.get(name)
        if prev is not None and prev.role != role:
            raise DataError(f"field {name!r} is declared both as {prev.role!r} and {role!r}")
        self._fields[name] = FieldInfo(name=name, role=role, description=description)  # type: ignore[arg-type]

    def add_documents(self, domain: str, field: str, texts: Iterable[str], description: str = "") -> None:
        """Tokenize and append documents of one domain (empty/whitespace-only texts are skipped)."""
        if field not in self._fields:
            raise DataError(f"domain {domain!r}: field {field!r} was not declared")
        if domain not in self._writers:
            stem = safe_filename(domain)
            taken = {w[1].path.name for w in self._writers.values()}
            if f"{stem}.train.bin" in taken:
                stem = f"{stem}-{hashlib.sha1(domain.encode()).hexdigest()[:6]}"
            train = ShardWriter(self.root / "shards" / f"{stem}.train.bin", self.dtype, self.tokenizer_info.eos_token_id)
            ev = ShardWriter(self.root / "shards" / f"{stem}.eval.bin", self.dtype, self.tokenizer_info.eos_token_id)
            self._writers[domain] = (field, train, ev)
        elif self._writers[domain][0] != field:
            raise DataError(f"domain {domain!r} is assigned to two fields: {self._writers[domain][0]!r} and {field!r}")
        if description:
            self._descriptions[domain] = description
        _, train, ev = self._writers[domain]
        reserve = None
        if self.min_eval_tokens > 0 or self.min_eval_documents > 0:
            reserve = self._reserves.setdefault(
                domain, _Reserve(self.min_eval_tokens, self.min_eval_documents)
            )
        batch: list[str] = []
        for t in texts:
            if t and t.strip() and not self._contaminated(t, domain):
                batch.append(t)
            if len(batch) >= self.batch_size:
                self._write_batch(batch, train, ev, reserve)
                batch = []
        if batch:
            self._write_batch(batch, train, ev, reserve)

    def _contaminated(self, text: str, domain: str) -> bool:
        """Whether a document shares an n-gram with a benchmark (then counted, not written)."""
        if not self._index:
            return False
        hits = self._index.match(text)
        for b in hits:
            self._overlaps.setdefault(b, Counter())[domain] += 1
        return bool(hits)

    def add_benchmark(
        self,
        name: str,
        field: str,
        kind: str,
        items: Sequence[Mapping[str, Any]],
        *,
        description: str = "",
        source: Mapping[str, Any] | None = None,
        decontaminate: bool = True,
    ) -> None:
        """Store a benchmark (``qa`` items ``{prompt, answer}`` or ``text`` items ``{text}``).

        With ``decontaminate`` (the default) documents added afterwards that share an n-gram with
        an item are dropped; so a decontaminated benchmark must come before any document — added
        later, it would leave copies already written in the shards.
        """
        if field not in self._fields:
            raise DataError(f"benchmark {name!r}: field {field!r} was not declared")
        taken = {t.name for t in self._tasks} | {b.name for b, _ in self._benchmarks}
        if name in taken:
            raise DataError(f"benchmark {name!r} is added twice (or is also a task set's name)")
        check_items(name, kind, items)
        if decontaminate and any(w[1].documents or w[2].documents for w in self._writers.values()):
            raise DataError(f"benchmark {name!r}: add benchmarks before documents, so that "
                            "documents overlapping them can be dropped")
        rel, digest = write_benchmark_file(self.root, name, items)
        pos = None
        if decontaminate:
            pos = len(self._index.names)
            self._unchecked[name] = self._index.add(name, (item_text(kind, i) for i in items))
        info = BenchmarkInfo(name=name, field=field, kind=kind, file=rel, count=len(items),  # type: ignore[arg-type]
                             sha256=digest, description=description, source=dict(source or {}))
        self._benchmarks.append((info, pos))

    def _write_batch(
        self, batch: list[str], train: ShardWriter, ev: ShardWriter, reserve: _Reserve | None
    ) -> None:
        encodings = self.tokenizer.encode_batch(batch, add_special_tokens=False)
        for text, enc in zip(batch, encodings, strict=True):
            key = split_key(text, self.split_salt)
            if key / 2**64 < self.eval_fraction:  # exactly is_eval_document's test
                ev.add(enc.ids)
                continue
            if reserve is not None:
                reserve.add(key, train.tokens, len(enc.ids) + 1)
            train.add(enc.ids)

    def _top_up(self, dname: str, train: ShardWriter, ev: ShardWriter) -> int:
        """Move training documents to the held-out split up to the minimum; returns how many.

        The shards are already closed: the chosen documents are appended to the eval shard and the
        training shard is rewritten without them, streaming in bounded chunks.
        """
        need_tokens = max(0, self.min_eval_tokens - ev.tokens)
        need_docs = max(0, self.min_eval_documents - ev.documents)
        if not (need_tokens or need_docs):
            return 0
        reserve = self._reserves.get(dname)
        chosen = reserve.take(need_tokens, need_docs) if reserve is not None else None
        total_tokens, total_docs = train.tokens + ev.tokens, train.documents + ev.documents
        if chosen is None or len(chosen) >= train.documents:
            raise DataError(
                f"domain {dname!r} is too small for both a held-out set of min_eval_tokens="
                f"{self.min_eval_tokens} / min_eval_documents={self.min_eval_documents} and "
                f"training documents: it has {total_docs} documents, {total_tokens} tokens in all; "
                "add documents, merge it into another domain (fewer clusters), or lower "
                "min_eval_tokens / min_eval_documents in the build config"
            )
        chosen.sort()
        dtype = DTYPES[self.dtype]
        src = train.path.with_name(train.path.name + ".rewrite")
        os.replace(train.path, src)
        data = np.memmap(src, dtype=dtype, mode="r") if train.tokens else np.zeros(0, dtype)
        with open(ev.path, "ab") as evf, open(train.path, "wb") as trf:
            pos = 0
            for offset, length in chosen:
                _copy(data, pos, offset, trf)
                _copy(data, offset, offset + length, evf)
                pos = offset + length
            _copy(data, pos, train.tokens, trf)
        del data
        src.unlink()
        moved = sum(length for _, length in chosen)
        train.tokens -= moved
        train.documents -= len(chosen)
        ev.tokens += moved
        ev.documents += len(chosen)
        logger.info(
            "domain %r: held out %d more training documents (%d tokens) to reach "
            "min_eval_tokens=%d / min_eval_documents=%d",
            dname, len(chosen), moved, self.min_eval_tokens, self.min_eval_documents,
        )
        return len(chosen)

    def add_task(self, name: str, field: str, rows: list[dict[str, Any]], description: str = "") -> None:
        """Store a task set as JSONL (each row needs ``prompt`` and ``answer``).

        The older form of a ``qa`` benchmark (no decontamination, no hash in the manifest), kept
        so that directories and specs that use one stay byte-identical; new code adds benchmarks.
        """
        if name in {b.name for b, _ in self._benchmarks}:
            raise DataError(f"task {name!r}: a benchmark already has that name")
        for i, r in enumerate(rows):
            if "prompt" not in r or "answer" not in r:
                raise DataError(f"task {name!r}: row {i} needs 'prompt' and 'answer' keys")
        rel = f"tasks/{safe_filename(name)}.jsonl"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        self._tasks.append(TaskInfo(name=name, field=field, file=rel, count=len(rows), description=description))

    def finish(self, name: str, content_hash: str, provenance: dict[str, Any]) -> Manifest:
        """Close shards, validate every domain and write ``manifest.json``."""
        benchmarks = []  # first: a domain emptied by decontamination is then explained
        for info, pos in self._benchmarks:
            if pos is not None:
                overlap = overlap_info(self._index, pos, self._overlaps.get(pos, Counter()),
                                       self._unchecked[info.name], removed=True)
                info = info.model_copy(update={"overlap": overlap})
                log_overlap(info.name, overlap, "the corpus")
            benchmarks.append(info)
        domains: list[DomainInfo] = []
        topped_up: dict[str, int] = {}
        for dname, (field, train, ev) in self._writers.items():
            train.close()
            ev.close()
            if train.documents == 0 and ev.documents == 0:
                raise DataError(f"domain {dname!r} is empty: no non-empty documents were assigned to it")
            if train.documents == 0:
                raise DataError(f"domain {dname!r} has no training documents (all {ev.documents} fell in the eval split); add documents or lower eval_fraction")
            if moved := self._top_up(dname, train, ev):
                topped_up[dname] = moved
            if ev.documents == 0:
                raise DataError(
                    f"domain {dname!r} has no held-out documents ({train.documents} training documents); "
                    "add documents, raise eval_fraction, or set min_eval_documents / min_eval_tokens "
                    "in the build config"
                )
            if self.warn_eval_tokens > 0 and ev.tokens < self.warn_eval_tokens:
                logger.warning(
                    "domain %r has only %d held-out tokens (%d documents), fewer than %d: too "
                    "few to score it reliably; set min_eval_tokens: %d in the build config (or "
                    "raise eval_fraction)",
                    dname, ev.tokens, ev.documents, self.warn_eval_tokens, self.warn_eval_tokens,
                )
            if train.tokens < self.min_sequence_tokens:
                raise DataError(
                    f"domain {dname!r} has {train.tokens} training tokens, fewer than one sequence "
                    f"({self.min_sequence_tokens}); add documents, merge it into another domain, or drop it"
                )
            domains.append(
                DomainInfo(
                    name=dname,
                    field=field,
                    role=self._fields[field].role,
                    train_file=str(train.path.relative_to(self.root)),
                    eval_file=str(ev.path.relative_to(self.root)),
                    train_tokens=train.tokens,
                    eval_tokens=ev.tokens,
                    train_documents=train.documents,
                    eval_documents=ev.documents,
                    description=self._descriptions.get(dname, ""),
                )
            )
        if not domains:
            raise DataError("no domains were produced: the inputs contained no documents")
        if topped_up:  # only then, so a build without top-ups writes the same manifest as before
            provenance = dict(provenance, eval_topped_up=topped_up)
        used_fields = {d.field for d in domains}
        for f in self._fields:
            if f not in used_fields:
                raise DataError(f"field {f!r} has no domains: its inputs produced no documents")
        manifest = Manifest(
            name=name,
            content_hash=content_hash,
            dtype=self.dtype,  # type: ignore[arg-type]
            tokenizer=self.tokenizer_info,
            fields=list(self._fields.values()),
            domains=sorted(domains, key=lambda d: (d.field, d.name)),
            tasks=self._tasks,
            benchmarks=benchmarks,
            provenance=provenance,
            created_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        )
        write_json_atomic(self.root / MANIFEST_NAME, manifest.model_dump(mode="json"))
        return manifest


def _copy(data: np.ndarray, start: int, stop: int, f: Any, chunk: int = 1 << 20) -> None:
    for i in range(start, stop, chunk):
        np.asarray(data[i : min(stop, i + chunk)]).tofile(f)
