"""The base model: the proxy pre-trained on the source field, cached by content hash.

Every episode starts from the same base, so it is trained once and kept under
``cache_dir()/bases/<key>/`` where ``key`` hashes everything that determines it (the data
directory's content hash, the source domains, model config, pre-training config, context length,
seed, format version). The directory is a standard Hugging Face model directory
(``config.json`` + ``model.safetensors``, loadable by ``AutoModelForCausalLM.from_pretrained``)
with the data directory's tokenizer, plus ``optimizer.safetensors`` (AdamW moments, for CPT
with ``optimizer_state: restored``) and ``mixagent_base.json`` (inputs and final metrics).
It is written atomically, and a file lock makes concurrent workers (Ray) wait for one build
instead of all training the same base.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixagent.data.manifest import DataDir
from mixagent.data.sampler import MixtureSampler
from mixagent.errors import DataError
from mixagent.proxy.config import ModelSpec, PretrainSpec, RuntimeSpec
from mixagent.proxy.model import build_hf_config, build_model, count_parameters, quiet_transformers
from mixagent.proxy.runtime import configure_runtime, resolve_threads, thread_scope
from mixagent.proxy.schedule import lr_table
from mixagent.proxy.training import make_optimizer, train_steps
from mixagent.utils.io import atomic_directory, file_lock, sha256_json, write_json_atomic
from mixagent.utils.paths import cache_dir

BASE_FORMAT = "mixagent.base/1"
META_NAME = "mixagent_base.json"
OPTIMIZER_NAME = "optimizer.safetensors"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseRecipe:
    """Everything that determines a base model; its hash names the cache entry."""

    data: DataDir
    domains: tuple[str, ...]
    model: ModelSpec
    pretrain: PretrainSpec
    seq_len: int
    seed: int

    def key_inputs(self) -> dict[str, Any]:
        return {
            "format": BASE_FORMAT,
            "data_content_hash": self.data.manifest.content_hash,
            "domains": list(self.domains),
            "model": self.model.model_dump(mode="json"),
            "pretrain": self.pretrain.model_dump(mode="json"),
            "seq_len": self.seq_len,
            "seed": self.seed,
        }

    @property
    def key(self) -> str:
        return sha256_json(self.key_inputs())[:20]

    def hf_config(self) -> Any:
        tok = self.data.manifest.tokenizer
        return build_hf_config(self.model, tok.vocab_size, self.seq_len, tok.eos_token_id)


@dataclass
class BaseCheckpoint:
    """A cached base: its directory and metadata. :meth:`load` gives model + optimizer state."""

    path: Path
    meta: dict[str, Any]

    def load(self, device: torch.device) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        """The model (float32, on ``device``) and the saved AdamW moments keyed by param name."""
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM

        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(str(self.path), dtype=torch.float32,
                                                         local_files_only=True,
                                                         use_safetensors=True)
        model.to(device)
        opt_file = self.path / OPTIMIZER_NAME
        moments = load_file(str(opt_file), device=str(device)) if opt_file.is_file() else {}
        return model, moments


def bases_dir() -> Path:
    return cache_dir() / "bases"


def _read(path: Path) -> BaseCheckpoint | None:
    meta_path = path / META_NAME
    if not (meta_path.is_file() and (path / "model.safetensors").is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return BaseCheckpoint(path, meta)


def ensure_base(recipe: BaseRecipe, runtime: RuntimeSpec | None = None, *, force: bool = False,
                progress: bool | None = None) -> BaseCheckpoint:
    """The cached base for ``recipe``, pre-training it first if needed (or if ``force``)."""
    final = bases_dir() / recipe.key
    if not force and (found := _read(final)) is not None:
        return found
    with file_lock(bases_dir() / f".{recipe.key}.lock"):
        if not force and (found := _read(final)) is not None:  # another process built it
            return found
        if final.exists():  # incomplete or forced: rebuild
            shutil.rmtree(final, ignore_errors=True)
        with atomic_directory(final) as tmp:
            pretrain_base(recipe, tmp, runtime or RuntimeSpec(), progress=progress)
    found = _read(final)
    assert found is not None
    return found


def pretrain_base(recipe: BaseRecipe, out: Path, runtime: RuntimeSpec,
                  progress: bool | None = None) -> dict[str, Any]:
    """Pre-train the proxy on the source domains and save it into ``out``."""
    from safetensors.torch import save_file

    from mixagent.utils.progress import Progress

    device = configure_runtime(runtime)
    spec = recipe.pretrain
    data = recipe.data
    domains = list(recipe.domains)
    if not domains:
        raise DataError("pre-training needs at least one source domain")
    if spec.weights == "tokens":
        weights = np.array([data.domain(d).train_tokens for d in domains], dtype=np.float64)
    else:
        weights = np.ones(len(domains))
    sampler = MixtureSampler(data, recipe.seq_len, weights, seed=recipe.seed, domains=domains)
    config = recipe.hf_config()
    model = build_model(config, recipe.seed).to(device)
    optimizer = make_optimizer(model, spec.optimizer)
    per_step = spec.batch_size * recipe.seq_len
    total = -(-spec.tokens // per_step)
    lrs = lr_table(spec.lr, total)
    chunk = 32  # steps per gathered block: bounded memory, negligible per-block overhead
    t0 = time.perf_counter()
    losses: list[float] = []
    log.info("pre-training base %s: %d params, %d steps of %d tokens on %d source domains",
             recipe.key, count_parameters(model), total, per_step, len(domains))
    # a bar on a terminal; otherwise a log line about every tenth of the run (and every 30 s),
    # so a log file shows the loss and speed of a long pre-training
    with thread_scope(resolve_threads(runtime)), \
            Progress(total, "pre-training base", "step", progress=progress, logger=log,
                     log_every=max(1, total // 10), log_seconds=30.0) as bar:
        for start in range(0, total, chunk):
            n = min(chunk, total - start)
            tokens, _ = sampler.next_batch(n * spec.batch_size)
            batch = torch.from_numpy(tokens).view(n, spec.batch_size, recipe.seq_len).to(device)
            step_losses = train_steps(model, optimizer, batch, lrs[start : start + n],
                                      spec.optimizer.grad_clip)
            losses.extend(step_losses.cpu().tolist())
            elapsed = time.perf_counter() - t0
            bar.set_postfix({"loss": f"{np.mean(losses[-n:]):.3f}",
                             "tokens/s": f"{(start + n) * per_step / max(elapsed, 1e-9):,.0f}"},
                            refresh=False)
            bar.update(n)
    model.eval()
    with quiet_transformers():
        model.save_pretrained(str(out))
    _save_tokenizer(data, out)
    save_file(_moments(model, optimizer), str(out / OPTIMIZER_NAME))
    meta = {
        **recipe.key_inputs(),
        "key": recipe.key,
        "parameters": count_parameters(model),
        "steps": total,
        "tokens": total * per_step,
        "final_train_loss": float(np.mean(losses[-max(1, total // 20):])),
        "seconds": round(time.perf_counter() - t0, 3),
        "versions": {"torch": torch.__version__, "transformers": _tf_version()},
    }
    write_json_atomic(out / META_NAME, meta)
    log.info("base %s: final train loss %.3f after %.1f s", recipe.key, meta["final_train_loss"],
             meta["seconds"])
    return meta


def _tf_version() -> str:
    import transformers

    return str(transformers.__version__)


def _save_tokenizer(data: DataDir, out: Path) -> None:
    src = data.tokenizer_dir
    if src.is_dir():
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, out / f.name)


def _moments(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """AdamW state keyed by parameter name, as plain tensors (safetensors, never pickle)."""
    names = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, torch.Tensor] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for k in ("exp_avg", "exp_avg_sq", "step"):
                if k in state:
                    v = state[k]
                    v = v if torch.is_tensor(v) else torch.tensor(float(v))
                    out[f"{k}/{names[id(p)]}"] = v.detach().to("cpu").contiguous().clone()
    return out


def moments_to_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     moments: dict[str, torch.Tensor]) -> None:
    """Load saved AdamW moments (see :func:`_moments`) into a freshly built optimizer."""
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            if f"exp_avg/{name}" not in moments:
                raise DataError(f"base optimizer state has no moments for parameter {name!r}")
            step_device = p.device if group.get("fused") or group.get("capturable") else "cpu"
            optimizer.state[p] = {
                "step": moments[f"step/{name}"].clone().to(step_device, torch.float32),
                "exp_avg": moments[f"exp_avg/{name}"].clone().to(p.device),
                "exp_avg_sq": moments[f"exp_avg_sq/{name}"].clone().to(p.device),
            }
