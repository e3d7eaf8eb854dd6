"""Tokenizers for data directories: train a byte-level BPE, or adopt a local HF tokenizer.

Either way the result is saved as a standard HF tokenizer directory (``tokenizer.json`` plus
configs) so that ``AutoTokenizer.from_pretrained`` loads it, and it gets a hash of its vocabulary
and merges. The hash is what the CPT run compares against a model's tokenizer: token ids from one
tokenizer are garbage to a model trained with another.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from mixagent.data.manifest import TokenizerInfo
from mixagent.errors import DataError

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: str | Path, min_frequency: int = 2) -> TokenizerInfo:
    """Train a byte-level BPE on a text stream and save it as an HF tokenizer directory.

    Byte-level so that any input (code, unicode math, stray bytes) round-trips without unknown
    tokens. Training streams ``texts``; the ``tokenizers`` trainer keeps only word counts.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise DataError(f"tokenizer.vocab_size={vocab_size} is too small: byte-level BPE needs at least 300 (256 bytes + merges)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_batched(texts), trainer=trainer)
    return _save(tok, out_dir, kind="trained-bpe")


def adopt_pretrained(src_dir: str | Path, out_dir: str | Path) -> TokenizerInfo:
    """Copy a local HF tokenizer directory into the data directory (no download, ever)."""
    from transformers import AutoTokenizer

    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise DataError(f"tokenizer.path: {src_dir} is not a directory holding a Hugging Face tokenizer")
    try:
        hf = AutoTokenizer.from_pretrained(str(src_dir), local_files_only=True)
    except Exception as err:
        raise DataError(f"tokenizer.path: cannot load a tokenizer from {src_dir}: {err}") from None
    if not getattr(hf, "is_fast", False):
        raise DataError(f"tokenizer.path: {src_dir} holds a slow tokenizer; mixagent needs a fast (tokenizer.json) one")
    if hf.eos_token_id is None:
        raise DataError(f"tokenizer.path: the tokenizer in {src_dir} has no EOS token; documents need a separator")
    out_dir = Path(out_dir)
    hf.save_pretrained(str(out_dir))
    return TokenizerInfo(
        path=out_dir.name,
        hash=tokenizer_hash(out_dir),
        vocab_size=len(hf),
        eos_token_id=int(hf.eos_token_id),
        kind="pretrained",
    )


def _save(tok: object, out_dir: str | Path, kind: str) -> TokenizerInfo:
    from transformers import PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
    )
    hf.save_pretrained(str(out_dir))
    return TokenizerInfo(
        path=out_dir.name,
        hash=tokenizer_hash(out_dir),
        vocab_size=len(hf),
        eos_token_id=int(hf.eos_token_id),
        kind=kind,  # type: ignore[arg-type]
    )


def tokenizer_hash(tok_dir: str | Path) -> str:
    """Hash what decides token ids: the model (vocab, merges), normaliser, pre-tokeniser, specials.

    Volatile parts of the saved files (padding/truncation settings, file ordering) are excluded,
    so re-saving the same tokenizer gives the same hash.
    """
    path = Path(tok_dir) / "tokenizer.json"
    if not path.is_file():
        raise DataError(f"{tok_dir}: no tokenizer.json (mixagent needs a fast tokenizer)")
    spec = json.loads(path.read_text(encoding="utf-8"))
    keep = {k: spec.get(k) for k in ("model", "normalizer", "pre_tokenizer", "added_tokens")}
    payload = json.dumps(keep, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def load_tokenizer(tok_dir: str | Path) -> object:
    """The raw ``tokenizers.Tokenizer`` of a saved directory (fast batch encoding, no HF overhead)."""
    from tokenizers import Tokenizer

    path = Path(tok_dir) / "tokenizer.json"
    if not path.is_file():
        raise DataError(f"{tok_dir}: no tokenizer.json (mixagent needs a fast tokenizer)")
    return Tokenizer.from_file(str(path))


def _batched(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for t in texts:
        batch.append(t)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
