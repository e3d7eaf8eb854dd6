"""The three sizes of the built-in corpus and the limits each one sets.

A size is a typed preset, not a scattering of constants: every cap that decides how much text a
build takes lives in one :class:`SizeSpec`, and the spec is part of the corpus's content hash.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mixagent.errors import ConfigError


@dataclass(frozen=True)
class SizeSpec:
    """Limits for one size of the built-in corpus.

    ``domain_chars`` caps each domain's text so the three fields stay roughly balanced (the
    installed Python code is ten times larger than the math docstrings); ``file_chars`` caps what
    one source file may give so no single file dominates a domain. ``min_domain_tokens`` is the
    least training text a domain must have to be kept: at ``small`` that is a few hundred
    sequences of 256 tokens.
    """

    name: str
    vocab_size: int
    domain_chars: int
    file_chars: int
    doc_chars: int
    tokenizer_sample_chars: int  # per domain, so every domain shapes the vocabulary
    min_domain_tokens: int
    eval_fraction: float
    heldout_problems: int
    full_domains: bool  # True: every domain; False: the few marked for the tiny test corpus

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec(
        name="tiny",
        vocab_size=768,
        domain_chars=40_000,
        file_chars=6_000,
        doc_chars=1_500,
        tokenizer_sample_chars=15_000,
        min_domain_tokens=16 * 256,
        eval_fraction=0.1,
        heldout_problems=200,
        full_domains=False,
    ),
    "small": SizeSpec(
        name="small",
        vocab_size=4096,
        domain_chars=500_000,
        file_chars=30_000,
        doc_chars=4_000,
        tokenizer_sample_chars=120_000,
        min_domain_tokens=300 * 256,
        eval_fraction=0.06,
        heldout_problems=200,
        full_domains=True,
    ),
    "full": SizeSpec(
        name="full",
        vocab_size=8192,
        domain_chars=8_000_000,
        file_chars=400_000,
        doc_chars=8_000,
        tokenizer_sample_chars=400_000,
        min_domain_tokens=300 * 256,
        eval_fraction=0.02,
        heldout_problems=1000,
        full_domains=True,
    ),
}


def size_spec(size: str) -> SizeSpec:
    """The preset for a size name, with an error that lists the choices."""
    try:
        return SIZES[size]
    except KeyError:
        raise ConfigError(f"unknown built-in corpus size {size!r}; choose one of: {', '.join(SIZES)}") from None
