"""Base model directories for CPT demos: ``mixagent model pretrain`` and a random-init helper.

A practitioner brings their own checkpoint; on a CPU-only machine the stand-in is a small Llama
pre-trained on the data directory's source field with the proxy engine's pre-training loop
(:func:`mixagent.proxy.base_model.pretrain_base`), saved as a normal HF model directory (config +
safetensors + the data's tokenizer) so ``mixagent cpt`` treats it like any other model.
:func:`cached_model` gives the same model from the proxies' base cache (``mixagent demo``).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixagent.data.manifest import DataDir
from mixagent.errors import ConfigError
from mixagent.proxy.config import LRSpec, ModelSpec, PretrainSpec, RuntimeSpec
from mixagent.utils.io import atomic_directory

if TYPE_CHECKING:
    from mixagent.proxy.base_model import BaseRecipe

log = logging.getLogger(__name__)

#: Llama sizes; parameters with an 8k vocabulary (tied embedding): micro 0.28M, small 1.9M,
#: medium 8.4M, large 26M
SIZES: dict[str, dict[str, Any]] = {
    "micro": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2, "num_key_value_heads": 2},
    "small": {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4,
              "num_attention_heads": 4, "num_key_value_heads": 4},
    "medium": {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 8,
               "num_attention_heads": 8, "num_key_value_heads": 4},
    "large": {"hidden_size": 384, "intermediate_size": 1152, "num_hidden_layers": 12,
              "num_attention_heads": 6, "num_key_value_heads": 6},
}


def model_spec(size: str) -> ModelSpec:
    if size not in SIZES:
        raise ConfigError(f"unknown model size {size!r}; choose from {', '.join(SIZES)}")
    return ModelSpec(arch="llama", config=dict(SIZES[size]))


def _copy_tokenizer(data: DataDir, out: Path) -> None:
    for f in data.tokenizer_dir.iterdir():
        if f.is_file():
            shutil.copy2(f, out / f.name)


def init_model_dir(data: DataDir, out: str | Path, size: str = "micro", seq_len: int = 128,
                   seed: int = 0) -> Path:
    """A randomly initialised model directory with the data's tokenizer (tests, smoke runs)."""
    from mixagent.proxy.model import build_hf_config, build_model, quiet_transformers

    tok = data.manifest.tokenizer
    config = build_hf_config(model_spec(size), tok.vocab_size, seq_len, tok.eos_token_id)
    model = build_model(config, seed)
    out = Path(out)
    with atomic_directory(out, replace=True) as tmp:
        with quiet_transformers():
            model.save_pretrained(str(tmp))
        _copy_tokenizer(data, tmp)
    return out


def _recipe(data: DataDir, field: str, size: str, *, tokens: int, seq_len: int, batch_size: int,
            lr: float, seed: int) -> BaseRecipe:
    from mixagent.proxy.base_model import BaseRecipe

    domains = tuple(d.name for d in data.domains_of_field(field))
    spec = PretrainSpec(tokens=tokens, batch_size=batch_size,
                        lr=LRSpec(schedule="cosine", peak=lr, warmup_steps=10))
    return BaseRecipe(data, domains, model_spec(size), spec, seq_len, seed)


def pretrain_model(data: DataDir, field: str, size: str, out: str | Path, *, tokens: int,
                   seq_len: int = 128, batch_size: int = 16, lr: float = 1e-3, seed: int = 0,
                   progress: bool | None = None) -> dict[str, Any]:
    """Pre-train a model of ``size`` on every domain of ``field`` and save it to ``out``."""
    from mixagent.proxy.base_model import pretrain_base

    recipe = _recipe(data, field, size, tokens=tokens, seq_len=seq_len, batch_size=batch_size, lr=lr,
                     seed=seed)
    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out} already exists; choose a new --out folder")
    with atomic_directory(out) as tmp:
        meta = pretrain_base(recipe, tmp, RuntimeSpec(), progress=progress)
    log.info("model written to %s (%d parameters)", out, meta["parameters"])
    return meta


def cached_model(data: DataDir, field: str, size: str, *, tokens: int, seq_len: int = 128,
                 batch_size: int = 16, lr: float = 1e-3, seed: int = 0,
                 progress: bool | None = None) -> tuple[Path, dict[str, Any], bool]:
    """The model :func:`pretrain_model` would write, from the proxies' base cache
    (:func:`mixagent.proxy.base_model.ensure_base`, keyed by data content, field, size, every setting
    and seed), pre-training it only if it is not there: a second demo, or a CPT run from another
    folder, reuses it. Returns ``(directory, its mixagent_base.json metadata, reused)``."""
    from mixagent.proxy.base_model import META_NAME, bases_dir, ensure_base

    recipe = _recipe(data, field, size, tokens=tokens, seq_len=seq_len, batch_size=batch_size, lr=lr,
                     seed=seed)
    reused = (bases_dir() / recipe.key / META_NAME).is_file()
    base = ensure_base(recipe, RuntimeSpec(), progress=progress)
    return base.path, base.meta, reused
