"""Shared fixtures. Heavy objects (data directories, Ray) are built once per session."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = {
    "prose/a": "the model reads a long sentence about history and people and places".split(),
    "prose/b": "documentation explains how the function returns a value when called".split(),
    "code/x": "def return import class self if else for in while yield lambda".split(),
    "math/y": "one two three plus minus equals times solve for x the answer is".split(),
}


def synthetic_docs(domain: str, n: int, seed: int = 0) -> list[str]:
    rnd = random.Random(f"{seed}-{domain}")
    vocab = WORDS[domain]
    return [" ".join(rnd.choice(vocab) for _ in range(rnd.randint(30, 90))) for _ in range(n)]


def write_synthetic_datadir(root: Path, docs_per_domain: int = 150) -> Path:
    """A small 4-domain data directory (prose source; code and math targets), built in <1 s."""
    from mixagent.data.tokenizer import train_bpe
    from mixagent.data.writer import DataDirWriter

    root.mkdir(parents=True, exist_ok=True)
    info = train_bpe((d for dom in WORDS for d in synthetic_docs(dom, 40)), 400, root / "tokenizer")
    w = DataDirWriter(root, info, eval_fraction=0.2, min_sequence_tokens=32)
    for field, role in (("prose", "source"), ("code", "target"), ("math", "target")):
        w.add_field(field, role)
    for dom in WORDS:
        w.add_documents(dom, dom.split("/")[0], synthetic_docs(dom, docs_per_domain))
    w.finish("synthetic", "synthetic-v1", {"generator": "tests/conftest.py"})
    return root


@pytest.fixture(scope="session")
def synthetic_datadir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_datadir(tmp_path_factory.mktemp("synthetic") / "data")
