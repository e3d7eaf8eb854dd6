"""Per-domain token shards: flat binary files of token ids, read through ``np.memmap``.

A shard is the concatenation of its documents' token ids, each document followed by the EOS id,
in the manifest's dtype (uint16 when the vocabulary fits, else uint32). This is nanoGPT's format:
reading a training sequence is a slice of a memmap, and memory use does not grow with corpus size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


def dtype_for_vocab(vocab_size: int) -> str:
    """The smallest shard dtype that can hold every token id of the vocabulary."""
    return "uint16" if vocab_size <= np.iinfo(np.uint16).max + 1 else "uint32"


class ShardWriter:
    """Appends documents' token ids to one shard file, buffering writes.

    Only the buffer (``buffer_tokens`` ids, 128k by default: ~0.5 MB) is held in memory, so writing
    a shard of any size has a flat footprint, and a build with hundreds of domains (two open shards
    each) stays in the low hundreds of MB.
    """

    def __init__(self, path: str | Path, dtype: str, eos_id: int, buffer_tokens: int = 1 << 17):
        self.path = Path(path)
        self.dtype = DTYPES[dtype]
        self.eos_id = int(eos_id)
        self.tokens = 0
        self.documents = 0
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._buffer_tokens = buffer_tokens
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()

    def add(self, ids: list[int] | np.ndarray) -> None:
        """Append one document (its ids, then EOS)."""
        arr = np.empty(len(ids) + 1, dtype=self.dtype)
        arr[:-1] = ids
        arr[-1] = self.eos_id
        self._buffer.append(arr)
        self._buffered += arr.size
        self.tokens += arr.size
        self.documents += 1
        if self._buffered >= self._buffer_tokens:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            np.concatenate(self._buffer).tofile(self._file)
            self._buffer.clear()
            self._buffered = 0

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_shard(path: str | Path, dtype: str) -> np.ndarray:
    """Open a shard read-only as a memmap (an empty file gives an empty array)."""
    path = Path(path)
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=DTYPES[dtype])
    return np.memmap(path, dtype=DTYPES[dtype], mode="r")
