"""Shared fixtures. Heavy objects (data directories, Ray) are built once per session."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any

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


MICRO = Path(__file__).resolve().parents[1] / "envs" / "micro.yaml"


def micro_spec_file(cache: Path, folder: Path) -> Path:
    """envs/micro.yaml with its data resolved to a built directory in ``cache`` (built-in corpus
    and the micro base are built once per cache), written to ``folder/micro.yaml``.

    ``data.path`` pointing at the built corpus gives the same env-spec hash as ``envs/micro.yaml``
    (the hash covers the data's content, not its location) but skips the built-in corpus's
    up-to-date scan in every process.
    """
    import yaml

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXAGENT_CACHE", str(cache))
        from mixagent.data.builtin import build_builtin
        from mixagent.envs.setup import build_engine, resolve_spec

        spec = yaml.safe_load(MICRO.read_text(encoding="utf-8"))
        spec["data"] = {"path": str(build_builtin(size=spec["data"]["builtin"]))}
        path = folder / "micro.yaml"
        path.write_text(yaml.safe_dump(spec), encoding="utf-8")
        build_engine(resolve_spec(path), progress=False)  # pre-train and cache the base
    return path


@pytest.fixture(scope="session")
def micro_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MIXAGENT_CACHE for every module that runs the micro env: the built-in tiny corpus and
    the micro base are built once per test session, not once per module."""
    return tmp_path_factory.getbasetemp() / "micro-cache"


@pytest.fixture
def micro_cache_env(micro_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point MIXAGENT_CACHE at :func:`micro_cache` (``pytestmark = pytest.mark.usefixtures(...)``)."""
    monkeypatch.setenv("MIXAGENT_CACHE", str(micro_cache))


@pytest.fixture(scope="session")
def micro_spec(micro_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """envs/micro.yaml with its data resolved to a built directory (corpus + base built once)."""
    return micro_spec_file(micro_cache, tmp_path_factory.mktemp("spec"))


@pytest.fixture(scope="session", params=["micro", "micro+task"])
def micro_env(request: pytest.FixtureRequest, micro_spec: Path, micro_cache: Path):
    """The micro env, and a variant that also scores the math exact-match task (same base)."""
    import yaml

    spec = micro_spec
    if request.param == "micro+task":
        from mixagent.data.builtin import TASK_NAME

        d = yaml.safe_load(micro_spec.read_text(encoding="utf-8"))
        d["eval"]["tasks"] = [{"name": TASK_NAME, "examples": 16}]
        d["reward"]["target_terms"] = {"loss": 1.0, f"{TASK_NAME}.answer_loss": 0.5}
        spec = micro_spec.with_name("micro-task.yaml")
        spec.write_text(yaml.safe_dump(d), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXAGENT_CACHE", str(micro_cache))
        from mixagent.envs.proxy_env import ProxyCPTEnv

        return ProxyCPTEnv(spec, progress=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    """One MIXAGENT_CACHE for the proxy and env tests of a session (built-in tiny corpus, bases)."""
    path = tmp_path_factory.getbasetemp() / "proxy-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXAGENT_CACHE", str(path))
        yield path


# -- production CPT (tests/test_cpt*.py) ------------------------------------------------------------
CPT_SEQ = 32


@pytest.fixture(scope="session")
def model_dir(synthetic_datadir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised micro Llama with the synthetic data directory's tokenizer."""
    from mixagent.cpt.model import init_model_dir
    from mixagent.data.manifest import DataDir

    return init_model_dir(DataDir(synthetic_datadir), tmp_path_factory.mktemp("m") / "model",
                          "micro", CPT_SEQ, seed=0)


def cpt_config(data: Path, model: Path, out: Path, **kw: Any) -> Any:
    """A CPTConfig small enough for a test (seconds): tiny batches, 2 held-out sequences per
    domain, no plot and no tqdm; ``kw`` overrides any field."""
    from mixagent.cpt.config import CPTConfig

    base: dict[str, Any] = dict(model=str(model), data=str(data), policy="baseline:uniform",
                                out=str(out), max_steps=12, reweight_every=3, seq_len=CPT_SEQ,
                                per_device_batch_size=2, logging_steps=1, learning_rate=1e-3,
                                eval={"sequences_per_domain": 2, "batch_size": 16},
                                plot=False, trainer_args={"disable_tqdm": True})
    base.update(kw)
    return CPTConfig(**base)


def stop_at(step: int) -> Any:
    """A Trainer callback that simulates a killed run: training stops after ``step`` (the
    checkpoint there is written first)."""
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step >= step:
                control.should_training_stop = True

    return StopAt()


# -- the console script ---------------------------------------------------------------------------
def run_main(argv: list[str], monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str]) -> tuple[int | str | None, str, str]:
    """``mixagent ARGV`` in this process: (exit code, stdout, stderr)."""
    from mixagent.cli.main import main

    monkeypatch.setattr(sys, "argv", ["mixagent", *argv])
    code: int | str | None = 0  # a return from main() is success, as for the console script
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err
