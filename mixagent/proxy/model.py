"""Building the proxy model from a config dict: ``LlamaConfig``/``GPT2Config`` → causal LM.

transformers silently accepts unknown config keys (a typo becomes a dead attribute), so keys are
checked here against the config class, and any build failure is reported as a
:class:`~mixagent.errors.ConfigError` naming ``model.config`` (and the sub-key when known).
A config is checked by building the model on the ``meta`` device and running a forward pass
there: that catches shape errors for any model size without allocating it.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Iterator
from typing import Any

from mixagent.errors import ConfigError
from mixagent.proxy.config import ModelSpec

#: keys mixagent sets from the data directory and the spec (per architecture)
_MANAGED = {
    "llama": ("vocab_size", "max_position_embeddings", "bos_token_id", "eos_token_id"),
    "gpt2": ("vocab_size", "n_positions", "max_position_embeddings", "bos_token_id",
             "eos_token_id"),
}
#: proxy defaults that differ from transformers' (dropout only adds noise to a proxy run)
_DEFAULTS = {
    "llama": {"tie_word_embeddings": True},
    "gpt2": {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0},
}


def _config_class(arch: str) -> Any:
    from transformers import GPT2Config, LlamaConfig

    return {"llama": LlamaConfig, "gpt2": GPT2Config}[arch]


def build_hf_config(
    spec: ModelSpec, vocab_size: int, seq_len: int, eos_token_id: int, where: str = "model"
) -> Any:
    """The transformers config of the proxy; errors name ``<where>.config.<key>``."""
    cls = _config_class(spec.arch)
    allowed = set(cls().to_dict()) | set(getattr(cls, "attribute_map", {}))
    for key in spec.config:
        if key in _MANAGED[spec.arch]:
            raise ConfigError(
                f"{where}.config.{key}: set by mixagent (vocabulary and special tokens from the data "
                "directory's tokenizer, context length from seq_len); remove it"
            )
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"{where}.config.{key}: not a {cls.__name__} key{hint}")
    kwargs = {**_DEFAULTS[spec.arch], **spec.config}
    pos_key = "max_position_embeddings" if spec.arch == "llama" else "n_positions"
    kwargs.update({"vocab_size": int(vocab_size), pos_key: int(seq_len),
                   "bos_token_id": int(eos_token_id), "eos_token_id": int(eos_token_id)})
    try:
        return cls(**kwargs)
    except Exception as err:  # transformers raises several types; all mean "bad config"
        raise ConfigError(_describe(err, where, spec.arch)) from None


def _describe(err: Exception, where: str, arch: str) -> str:
    text = " ".join(str(err).split())
    m = re.search(r"field '(\w+)'", text)
    key = f"{where}.config.{m.group(1)}" if m else f"{where}.config"
    text = re.sub(r"^(Class )?[Vv]alidation error for (validator|field) '\w+': ", "", text)
    return f"{key}: cannot build a {arch} model: {text}"


def check_model_config(config: Any, where: str = "model") -> None:
    """Build the model on the meta device and run a forward pass: cheap for any size."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
            model(input_ids=torch.zeros(1, 2, dtype=torch.long), use_cache=False)
    except Exception as err:
        if "meta" in str(err):  # an op that cannot run on meta tensors: not a config problem
            return
        raise ConfigError(_describe(err, where, config.model_type)) from None


def build_model(config: Any, seed: int) -> Any:
    """A freshly initialised float32 causal LM; initialisation is seeded without touching the
    caller's global torch RNG state."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model


def count_parameters(model: Any) -> int:
    """Unique trainable parameters (tied embeddings counted once)."""
    seen = {id(p): p.numel() for p in model.parameters()}
    return int(sum(seen.values()))


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' own progress bars (loading/saving a tiny proxy is instant)."""
    from transformers.utils import logging as tf_logging

    was = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            tf_logging.enable_progress_bar()
