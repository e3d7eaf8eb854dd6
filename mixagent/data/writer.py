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
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mixagent.data.manifest import (
    MANIFEST_NAME,
    DomainInfo,
    FieldInfo,
    Manifest,
    TaskInfo,
    TokenizerInfo,
)
from mixagent.data.shards import ShardWriter, dtype_for_vocab
from mixagent.data.tokenizer import load_tokenizer
from mixagent.errors import DataError
from mixagent.utils.io import write_json_atomic


def is_eval_document(text: str, eval_fraction: float, salt: str = "") -> bool:
    """Assign a document to the held-out split by a hash of its text.

    Hashing the content (not the position) keeps exact duplicates on the same side of the split,
    so a held-out document never also appears verbatim in training, and the split is stable when
    documents are reordered or added.
    """
    h = hashlib.blake2b((salt + text).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64 < eval_fraction


def safe_filename(name: str) -> str:
    """A filesystem-safe, still readable file stem for a domain name like 'prose/stdlib-text'."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "__", name).strip("_")
    return stem or "domain"


class DataDirWriter:
    """Tokenizes documents into per-domain train/eval shards inside ``root``.

    ``root`` must already contain the saved tokenizer (described by ``tokenizer_info``). Call
    :meth:`add_documents` any number of times per domain (streams: only one batch is in memory),
    :meth:`add_task` for task sets, then :meth:`finish` to validate and write the manifest.
    """

    def __init__(
        self,
        root: str | Path,
        tokenizer_info: TokenizerInfo,
        eval_fraction: float = 0.05,
        min_sequence_tokens: int = 0,
        batch_size: int = 512,
        split_salt: str = "",
    ):
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
        self._fields: dict[str, FieldInfo] = {}
        self._writers: dict[str, tuple[str, ShardWriter, ShardWriter]] = {}
        self._descriptions: dict[str, str] = {}
        self._tasks: list[TaskInfo] = []

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
        batch: list[str] = []
        for t in texts:
            if t and t.strip():
                batch.append(t)
            if len(batch) >= self.batch_size:
                self._write_batch(batch, train, ev)
                batch = []
        if batch:
            self._write_batch(batch, train, ev)

    def _write_batch(self, batch: list[str], train: ShardWriter, ev: ShardWriter) -> None:
        encodings = self.tokenizer.encode_batch(batch, add_special_tokens=False)
        for text, enc in zip(batch, encodings, strict=True):
            target = ev if is_eval_document(text, self.eval_fraction, self.split_salt) else train
            target.add(enc.ids)

    def add_task(self, name: str, field: str, rows: list[dict[str, Any]], description: str = "") -> None:
        """Store a task set as JSONL (each row needs ``prompt`` and ``answer``)."""
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
        domains: list[DomainInfo] = []
        for dname, (field, train, ev) in self._writers.items():
            train.close()
            ev.close()
            if train.documents == 0 and ev.documents == 0:
                raise DataError(f"domain {dname!r} is empty: no non-empty documents were assigned to it")
            if train.documents == 0:
                raise DataError(f"domain {dname!r} has no training documents (all {ev.documents} fell in the eval split); add documents or lower eval_fraction")
            if ev.documents == 0:
                raise DataError(f"domain {dname!r} has no held-out documents ({train.documents} training documents); add documents or raise eval_fraction")
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
            provenance=provenance,
            created_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        )
        write_json_atomic(self.root / MANIFEST_NAME, manifest.model_dump(mode="json"))
        return manifest
