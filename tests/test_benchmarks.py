"""Benchmarks: declared in a build config (or added to a built directory), stored, kept out of the
training data, scored by the proxy's evaluator and used in reward terms.

Every test writes its own tiny corpus (short documents over small disjoint word lists) and tiny
benchmark files, so a build takes a fraction of a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import run_main
from test_data_build import write_config, write_jsonl  # the corpus-build tests' helpers

from mixagent.data import DataDir
from mixagent.data.benchmarks import NgramIndex, iter_shard_documents
from mixagent.data.build import build_data_dir, plan_build
from mixagent.data.build.config import BuildConfig
from mixagent.data.manifest import metric_value
from mixagent.data.tokenizer import load_tokenizer
from mixagent.errors import ConfigError, DataError
from mixagent.utils.io import sha256_file

VOCABS = {
    "hist": "the king ruled a long war about history and people and places empire".split(),
    "docs": "documentation explains how the function returns value when called argument".split(),
    "math": "one two three plus minus equals times solve for answer is".split(),
    "geom": "triangle angle circle radius area perimeter square side length degrees".split(),
}
# A qa item long enough (>= 13 words with its answer) to be checked for overlap
QA = [
    {"question": f"Problem: solve {a} plus {b} times two minus one for the unknown value "
                 "and write the result. Answer:", "solution": str(a + 2 * b - 1)}
    for a, b in [(3, 4), (5, 6), (7, 2), (1, 9), (4, 4), (8, 3)]
]


def docs(kind: str, n: int, seed: int = 0, lo: int = 20, hi: int = 45) -> list[str]:
    rnd = random.Random(f"{seed}-{kind}")
    return [" ".join(rnd.choice(VOCABS[kind]) for _ in range(rnd.randint(lo, hi))) for _ in range(n)]


TEXT_BENCH = docs("geom", 6, seed=99, lo=40, hi=60)  # held-out geometry text, not in the corpus


def make_project(root: Path, plant: bool) -> list[str]:
    """Corpora (web: hist/docs by topic; math: math/geom) and two benchmark files; with
    ``plant``, two math documents contain qa item 0 (re-cased, re-punctuated) and one geometry
    document contains a 15-word stretch of text document 0."""
    math_docs, geom_docs = docs("math", 40), docs("geom", 40)
    planted: list[str] = []
    if plant:
        item = f"{QA[0]['question']} {QA[0]['solution']}"
        planted = [f"one two {item.upper().replace(':', ' -')} three plus",
                   f"{item}  solve for answer is one"]
        stretch = " ".join(TEXT_BENCH[0].split()[5:20])
        planted.append(f"radius area {stretch} side length")
        math_docs = [*math_docs, planted[0], planted[1]]
        geom_docs = [*geom_docs, planted[2]]
    rows = [{"text": t, "topic": "hist"} for t in docs("hist", 40)]
    rows += [{"text": t, "topic": "docs"} for t in docs("docs", 40)]
    write_jsonl(root / "corpora/web.jsonl", rows)
    write_jsonl(root / "corpora/math.jsonl", [{"body": t, "kind": "arith"} for t in math_docs]
                + [{"body": t, "kind": "geom"} for t in geom_docs])
    write_jsonl(root / "bench/arith.jsonl", QA)
    (root / "bench").mkdir(exist_ok=True)
    (root / "bench/geom.csv").write_text(
        "id,passage\n" + "".join(f"{i},{t}\n" for i, t in enumerate(TEXT_BENCH)), encoding="utf-8")
    return planted


BENCHMARKS = [
    {"name": "arith", "field": "math", "path": "bench/arith.jsonl", "kind": "qa",
     "prompt_column": "question", "answer_column": "solution", "description": "sums"},
    {"name": "geom_text", "field": "math", "path": "bench/geom.csv", "kind": "text",
     "text_column": "passage", "max_examples": 5},
]


def config(**top: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "bench-test",
        "tokenizer": {"train": {"vocab_size": 320, "sample_documents": 300}},
        "eval_fraction": 0.25,
        "min_sequence_tokens": 32,
        "fields": {
            "web": {"role": "source",
                    "inputs": [{"path": "corpora/web.jsonl", "domain": {"column": "topic"}}]},
            "math": {"role": "target",
                     "inputs": [{"path": "corpora/math.jsonl", "text_column": "body",
                                 "domain": {"column": "kind"}}]},
        },
    }
    cfg.update(top)
    return cfg


def all_documents(dd: DataDir) -> list[str]:
    tok = load_tokenizer(dd.tokenizer_dir)
    eos = dd.manifest.tokenizer.eos_token_id
    out = []
    for d in dd.domains:
        for split in ("train", "eval"):
            out += tok.decode_batch([doc.tolist() for doc in
                                     iter_shard_documents(dd.tokens(d.name, split), eos, chunk=64)])
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """A build with both benchmarks and planted overlaps (shared by the read-only checks)."""
    root = tmp_path_factory.mktemp("bench")
    planted = make_project(root, plant=True)
    out = build_data_dir(write_config(root, config(benchmarks=BENCHMARKS)), root / "out")
    return root, out, planted


# -- building and storing -------------------------------------------------------------------------
def test_build_stores_and_records_benchmarks(built: tuple[Path, Path, Any]) -> None:
    root, out, _ = built
    dd = DataDir(out)
    arith, geom = dd.manifest.benchmarks
    assert (arith.name, arith.kind, arith.field, arith.count) == ("arith", "qa", "math", len(QA))
    assert (geom.name, geom.kind, geom.count) == ("geom_text", "text", 5)  # max_examples
    for b in (arith, geom):
        assert b.sha256 == sha256_file(out / b.file)
    assert arith.source["sha256"] == sha256_file(root / "bench/arith.jsonl")
    assert arith.source["path"] == "bench/arith.jsonl"
    assert arith.source["columns"] == {"prompt_column": "question", "answer_column": "solution"}
    assert arith.description == "sums"
    rows = dd.benchmark_rows("arith")
    assert rows[1] == {"prompt": QA[1]["question"], "answer": QA[1]["solution"]}
    assert dd.benchmark_rows("geom_text") == [{"text": t} for t in TEXT_BENCH[:5]]
    assert [b.name for b in dd.benchmarks] == ["arith", "geom_text"]


def test_planted_overlap_is_dropped_and_counted(
    built: tuple[Path, Path, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, out, planted = built
    dd = DataDir(out)
    arith, geom = dd.manifest.benchmarks
    assert arith.overlap is not None and geom.overlap is not None
    assert (arith.overlap.documents, arith.overlap.removed) == (2, True)
    assert arith.overlap.by_domain == {"math/arith": 2}
    assert (geom.overlap.documents, geom.overlap.by_domain) == (1, {"math/geom": 1})
    assert arith.overlap.ngram == 13 and arith.overlap.unchecked_items == 0
    kept = all_documents(dd)
    assert len(planted) == 3 and not set(planted) & set(kept)
    ix = NgramIndex()
    ix.add("all", [f"{q['question']} {q['solution']}" for q in QA] + TEXT_BENCH)
    assert not any(ix.match(k) for k in kept)
    # the same corpus without benchmarks keeps the planted documents
    root = tmp_path
    make_project(root, plant=True)
    with caplog.at_level(logging.WARNING):
        plain = DataDir(build_data_dir(write_config(root, config()), root / "plain"))
    assert set(planted) <= set(all_documents(plain))
    total = sum(d.train_documents + d.eval_documents for d in plain.domains)
    assert total - sum(d.train_documents + d.eval_documents for d in dd.domains) == 3


def test_overlap_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_project(tmp_path, plant=True)
    with caplog.at_level(logging.INFO):
        build_data_dir(write_config(tmp_path, config(benchmarks=BENCHMARKS)), tmp_path / "out")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'arith': dropped 2 documents" in m and "math/arith: 2" in m for m in warned)


def test_benchmarks_enter_the_content_hash_and_absence_keeps_it(tmp_path: Path) -> None:
    make_project(tmp_path, plant=False)
    plain = plan_build(BuildConfig(**config()), tmp_path).content_hash
    spelled = config(benchmarks=[], decontamination={"ngram": 13, "min_item_words": 8})
    assert plan_build(BuildConfig(**spelled), tmp_path).content_hash == plain
    with_bench = plan_build(BuildConfig(**config(benchmarks=BENCHMARKS)), tmp_path).content_hash
    assert with_bench != plain
    (tmp_path / "bench/arith.jsonl").write_text(json.dumps(QA[0]) + "\n", encoding="utf-8")
    assert plan_build(BuildConfig(**config(benchmarks=BENCHMARKS)), tmp_path).content_hash \
        != with_bench
    # defaults of the benchmark's kind spelled out change nothing either
    explicit = [dict(BENCHMARKS[0]), dict(BENCHMARKS[1])]
    explicit[1]["format"] = None
    assert plan_build(BuildConfig(**config(benchmarks=explicit)), tmp_path).content_hash \
        == plan_build(BuildConfig(**config(benchmarks=BENCHMARKS)), tmp_path).content_hash


def test_ngram_index_normalises_words_and_skips_short_items() -> None:
    ix = NgramIndex(ngram=13, min_item_words=8)
    long = "The quick brown fox jumps over the lazy dog near the river bank today"
    assert ix.add("a", [long, "too short to check"]) == 1
    assert ix.add("b", ["one two three four five six seven eight"]) == 0
    assert ix.match("and THE quick-brown fox, jumps over the lazy dog near the River Bank!") == {0}
    assert ix.match("quick brown fox jumps over the lazy dog near the river bank") == set()  # 11
    assert ix.match("x one two three four five six seven eight y") == {1}
    assert ix.match("one two three four five six seven") == set()
    assert ix.match("too short to check") == set()


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "error", "needles"),
    [
        ({"path": "bench/missing.jsonl"}, DataError, ["benchmarks[0].path", "missing.jsonl"]),
        ({"answer_column": "nope"}, DataError,
         ["benchmarks[0].answer_column", "'nope'", "arith.jsonl", "question"]),
        ({"path": "bench/empty.jsonl"}, DataError, ["benchmarks[0]", "empty.jsonl"]),
        ({"field": "poetry"}, ConfigError, ["benchmarks[0].field", "'poetry'", "web, math"]),
        ({"kind": "multiple_choice"}, ConfigError, ["benchmarks.0.kind", "'qa' or 'text'"]),
        ({"text_column": "question"}, ConfigError, ["benchmarks.0", "'text_column'"]),
        ({"name": "a.b"}, ConfigError, ["benchmarks.0.name", "'a.b'"]),
        ({"path": "bench/blank.jsonl"}, DataError, ["benchmarks[0].answer_column", "row 2"]),
    ],
)
def test_bad_benchmark_input_is_a_clear_error(
    tmp_path: Path, change: dict[str, Any], error: type[Exception], needles: list[str]
) -> None:
    make_project(tmp_path, plant=False)
    (tmp_path / "bench/empty.jsonl").write_text("", encoding="utf-8")
    write_jsonl(tmp_path / "bench/blank.jsonl", [QA[0], {**QA[1], "solution": "  "}])
    bench = {**BENCHMARKS[0], **change}
    cfg = write_config(tmp_path, config(benchmarks=[bench]))
    with pytest.raises(error) as info:
        build_data_dir(cfg, tmp_path / "out")
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    assert not (tmp_path / "out").exists()


def test_duplicate_benchmark_name_is_an_error(tmp_path: Path) -> None:
    make_project(tmp_path, plant=False)
    cfg = write_config(tmp_path, config(benchmarks=[BENCHMARKS[0], {**BENCHMARKS[1], "name": "arith"}]))
    with pytest.raises(ConfigError, match=r"benchmarks\[1\]\.name: 'arith' is already"):
        build_data_dir(cfg, tmp_path / "out")


# -- add-benchmark ---------------------------------------------------------------------------------
def _tree_hashes(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_add_benchmark_counts_overlap_and_leaves_shards_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_project(tmp_path, plant=True)
    out = build_data_dir(write_config(tmp_path, config()), tmp_path / "out")
    before = DataDir(out).manifest
    shards, tok = _tree_hashes(out / "shards"), _tree_hashes(out / "tokenizer")
    cfg = write_config(tmp_path, {"benchmarks": BENCHMARKS}, "add.yaml")

    code, stdout, stderr = run_main(["data", "add-benchmark", str(out), str(cfg), "--strict"],
                                    monkeypatch, capsys)
    assert code != 0 and "nothing was added" in stderr and "arith: 2 documents" in stderr
    assert DataDir(out).manifest == before and not (out / "benchmarks").exists()

    code, stdout, _ = run_main(["data", "add-benchmark", str(out), str(cfg)], monkeypatch, capsys)
    assert code == 0, stdout
    assert "STILL in training" in stdout
    after = DataDir(out).manifest
    assert _tree_hashes(out / "shards") == shards and _tree_hashes(out / "tokenizer") == tok
    assert after.content_hash == before.content_hash and after.domains == before.domains
    arith, geom = after.benchmarks
    assert arith.overlap is not None and geom.overlap is not None
    assert (arith.overlap.documents, arith.overlap.removed) == (2, False)
    assert (geom.overlap.documents, geom.overlap.by_domain) == (1, {"math/geom": 1})
    assert arith.sha256 == sha256_file(out / arith.file) and geom.count == 5
    assert DataDir(out).benchmark_rows("arith")[0]["answer"] == QA[0]["solution"]
    assert [e["name"] for e in after.provenance["benchmarks_added"]] == ["arith", "geom_text"]

    code, _, stderr = run_main(["data", "add-benchmark", str(out), str(cfg)], monkeypatch, capsys)
    assert code != 0 and "already has a benchmark 'arith'" in stderr


def test_add_benchmark_checks_fields(tmp_path: Path) -> None:
    from mixagent.data.build import add_benchmarks

    make_project(tmp_path, plant=False)
    out = build_data_dir(write_config(tmp_path, config()), tmp_path / "out")
    cfg = write_config(tmp_path, {"benchmarks": [{**BENCHMARKS[0], "field": "code"}]}, "add.yaml")
    with pytest.raises(ConfigError, match=r"add.yaml: benchmarks\[0\]\.field: unknown field 'code'"):
        add_benchmarks(out, cfg)


# -- metrics -----------------------------------------------------------------------------------------
SEQ = 128  # long enough that no qa prompt (~65 tokens) is cut to fit
@pytest.fixture(scope="module")
def scored(built: tuple[Path, Path, Any]) -> tuple[DataDir, Any, Any]:
    """The evaluator on both benchmarks and a 1-layer model that memorised half the qa items."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from mixagent.proxy.config import EvalSpec, TaskSpec
    from mixagent.proxy.evaluation import Evaluator

    dd = DataDir(built[1])
    spec = EvalSpec(sequences_per_domain=1, batch_size=4,
                    tasks=[TaskSpec(name="arith"), TaskSpec(name="geom_text", examples=4)])
    ev = Evaluator(dd, dd.domain_names, spec, SEQ, torch.device("cpu"))
    torch.manual_seed(0)
    tok = dd.manifest.tokenizer
    model = LlamaForCausalLM(LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32,
                                         intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=SEQ, eos_token_id=tok.eos_token_id,
                                         bos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rows = ev.tasks[0].tokens[:3]
    for _ in range(60):
        loss = model(input_ids=rows, labels=rows).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return dd, ev, model


def test_qa_metrics_match_a_hand_computation(scored: tuple[DataDir, Any, Any]) -> None:
    dd, ev, model = scored
    result = ev(model)
    tok = dd.tokenizer
    eos = dd.manifest.tokenizer.eos_token_id
    logprobs, correct = [], []
    with torch.no_grad():
        for row in dd.benchmark_rows("arith"):
            prompt_ids = tok(row["prompt"], add_special_tokens=False)["input_ids"]
            full = tok(row["prompt"] + " " + row["answer"], add_special_tokens=False)["input_ids"]
            assert full[: len(prompt_ids)] == prompt_ids  # a clean prompt/answer boundary
            ids = torch.tensor([[eos, *full]])
            logp = F.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
            start = 1 + len(prompt_ids)  # first answer token
            answer = ids[0, start:]
            lp = logp[start - 1 : -1].gather(1, answer[:, None])[:, 0]
            logprobs.append(float(lp.mean()))
            greedy = bool((logp[start - 1 : -1].argmax(-1) == answer).all())
            nxt = tok.decode([int(logp[-1].argmax())])  # the answer must end there
            correct.append(greedy and not nxt[:1].isalnum())
    metrics = result.tasks["arith"]
    assert set(metrics) == {"exact_match", "answer_loss"}  # answer_logprob is derived from it
    assert metric_value(metrics, "answer_logprob") == pytest.approx(np.mean(logprobs), abs=1e-5)
    assert metric_value(metrics, "answer_loss") == -metric_value(metrics, "answer_logprob")
    assert metrics["exact_match"] == pytest.approx(np.mean(correct))
    assert 0 < np.mean(correct) < 1  # memorised some items, not all: both branches checked


def test_text_loss_matches_a_hand_computation(scored: tuple[DataDir, Any, Any]) -> None:
    dd, ev, model = scored
    tok = dd.tokenizer
    eos = dd.manifest.tokenizer.eos_token_id
    flat = [t for r in dd.benchmark_rows("geom_text")[:4]
            for t in (*tok(r["text"], add_special_tokens=False)["input_ids"], eos)]
    n = len(flat) // SEQ
    assert n >= 2
    x = torch.tensor(flat[: n * SEQ]).view(n, SEQ)
    with torch.no_grad():
        logits = model(input_ids=x[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), x[:, 1:].reshape(-1))
    result = ev(model)
    assert list(result.tasks) == ["arith", "geom_text"]
    assert result.tasks["geom_text"] == {"loss": pytest.approx(float(loss), abs=1e-5)}


def test_terms_have_the_right_sign() -> None:
    from mixagent.envs.scoring import term_value

    mask = np.array([True])
    losses = np.array([1.0])
    base = {"q": {"answer_loss": 2.0, "exact_match": 0.25}, "t": {"loss": 4.0}}
    better = {"q": {"answer_loss": 1.5, "exact_match": 0.5}, "t": {"loss": 3.0}}
    for norm in ("relative", "bounded"):
        v = {m: term_value(f"q.{m}", mask, losses, better, losses, base, norm)
             for m in ("answer_logprob", "answer_loss", "exact_match")}
        assert v["answer_logprob"] == pytest.approx(v["answer_loss"]) and v["answer_logprob"] > 0
        assert v["exact_match"] == pytest.approx(0.25)
        assert term_value("t.loss", mask, losses, better, losses, base, norm) > 0
        assert term_value("t.loss", mask, losses, base, losses, better, norm) < 0
    assert term_value("q.answer_logprob", mask, losses, better, losses, base) == pytest.approx(0.25)
    assert term_value("t.loss", mask, losses, better, losses, base) == pytest.approx(0.25)


# -- through the environment ---------------------------------------------------------------------------
def _spec(data: Path, folder: Path, **reward: Any) -> Path:
    micro = yaml.safe_load((Path(__file__).parents[1] / "envs/micro.yaml").read_text())
    micro.update(data={"path": str(data)}, source_field="web", target_field="math")
    micro["eval"]["tasks"] = [{"name": "arith", "examples": 6}, {"name": "geom_text"}]
    micro["reward"] = {"aggregator": "mean",
                       "source_terms": {"loss": 1.0, "geom_text.loss": 1.0},
                       "target_terms": {"arith.answer_logprob": 1.0, "arith.exact_match": 0.5},
                       **reward}
    micro["pretrain"]["tokens"] = 4096
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(micro), encoding="utf-8")
    return path


def test_benchmark_terms_reward_an_env_step(
    built: tuple[Path, Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mixagent.envs import ProxyCPTEnv

    monkeypatch.setenv("MIXAGENT_CACHE", str(tmp_path / "cache"))
    env = ProxyCPTEnv(_spec(built[1], tmp_path))
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.zeros(env.num_domains, np.float32))
    metrics = info["task_metrics"]
    assert set(metrics) == {"arith", "geom_text"} and set(metrics["geom_text"]) == {"loss"}
    terms = info["terms"]
    assert {"target.arith.answer_logprob", "source.geom_text.loss"} <= set(terms)
    assert np.isfinite(reward) and all(np.isfinite(v) for v in terms.values())
    base = env.engine.base_eval.tasks
    expect = (base["arith"]["answer_loss"] - metrics["arith"]["answer_loss"]) \
        / base["arith"]["answer_loss"]
    assert terms["target.arith.answer_logprob"] == pytest.approx(expect)


@pytest.mark.parametrize(
    ("terms", "needle"),
    [
        ({"arith.loss": 1.0}, "'arith' is a 'qa' benchmark; its metrics are exact_match"),
        ({"geom_text.answer_logprob": 1.0}, "'geom_text' is a 'text' benchmark"),
        ({"other.answer_logprob": 1.0}, "task 'other' is not evaluated"),
        ({"arith.accuracy": 1.0}, "'<benchmark>.<metric>'"),
    ],
)
def test_reward_terms_are_checked_against_benchmark_kinds(
    built: tuple[Path, Path, Any], tmp_path: Path, terms: dict[str, float], needle: str
) -> None:
    from mixagent.envs.setup import resolve_spec

    with pytest.raises(ConfigError) as info:
        resolve_spec(_spec(built[1], tmp_path, target_terms=terms))
    assert needle in str(info.value) and "reward.target_terms" in str(info.value)


def test_unknown_benchmark_in_eval_is_an_error(built: tuple[Path, Path, Any], tmp_path: Path) -> None:
    from mixagent.envs.setup import resolve_spec

    path = _spec(built[1], tmp_path)
    spec = yaml.safe_load(path.read_text())
    spec["eval"]["tasks"].append({"name": "mmlu"})
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"eval.tasks\[2\].name: unknown benchmark 'mmlu'; the "
                                          r"data directory has arith, geom_text"):
        resolve_spec(path)


def test_a_legacy_task_set_is_a_qa_benchmark(tmp_path: Path) -> None:
    from conftest import synthetic_docs, write_synthetic_datadir

    from mixagent.data.writer import DataDirWriter

    src = write_synthetic_datadir(tmp_path / "syn", docs_per_domain=40)
    root = tmp_path / "d"
    shutil.copytree(src / "tokenizer", root / "tokenizer")  # the writer needs a saved tokenizer
    w = DataDirWriter(root, DataDir(src).manifest.tokenizer, eval_fraction=0.2)
    w.add_field("math", "target")
    w.add_task("sums", "math", [{"prompt": "1+1=", "answer": "2"}])
    w.add_documents("math/y", "math", synthetic_docs("math/y", 40))
    with pytest.raises(DataError, match="add benchmarks before documents"):
        w.add_benchmark("late", "math", "text", [{"text": "one two"}])
    with pytest.raises(DataError, match="is added twice"):
        w.add_benchmark("sums", "math", "qa", [{"prompt": "a", "answer": "b"}], decontaminate=False)
    m = w.finish("legacy", "h", {})
    dd = DataDir(root)
    assert m.tasks[0].name == "sums" and m.benchmarks == []
    assert [(b.name, b.kind) for b in dd.benchmarks] == [("sums", "qa")]
    assert dd.benchmark_rows("sums") == dd.task_examples("sums")


@pytest.mark.parametrize("fmt", ["json", "parquet", "csv"])
def test_benchmark_files_of_every_format_read_alike(tmp_path: Path, fmt: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mixagent.data.build import BenchmarkConfig, read_benchmark_items, resolve_benchmark

    rows = [{"q": f"question {i}?", "a": str(i)} for i in range(5)]
    path = tmp_path / f"b.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(rows), encoding="utf-8")  # one JSON array, not lines
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("q,a\n" + "".join(f"{r['q']},{r['a']}\n" for r in rows), encoding="utf-8")
    cfg = BenchmarkConfig(name="b", field="math", path=path.name, kind="qa", prompt_column="q",
                          answer_column="a", max_examples=4)
    items = read_benchmark_items(resolve_benchmark(cfg, 0, tmp_path), str(tmp_path / "cache"))
    assert items == [{"prompt": r["q"], "answer": r["a"]} for r in rows[:4]]


def test_eval_benchmarks_is_an_alias_of_tasks_and_keeps_the_dump():
    """Specs may say ``eval: {benchmarks: [...]}``; the dump (and so every spec hash) still
    says ``tasks``, and giving both is an error rather than one silently winning."""
    from mixagent.proxy.config import EvalSpec

    a = EvalSpec.model_validate({"benchmarks": [{"name": "b"}]})
    assert a.model_dump() == EvalSpec.model_validate({"tasks": [{"name": "b"}]}).model_dump()
    assert "tasks" in a.model_dump() and "benchmarks" not in a.model_dump()
    with pytest.raises(ValueError, match="benchmarks"):
        EvalSpec.model_validate({"benchmarks": [{"name": "b"}], "tasks": []})
