"""The built-in corpus (``mixagent data builtin``): layout, provenance, splits, task, benchmarks,
reuse, determinism, and the v1 env-spec hash it must keep.

The ``tiny`` size is built once per session into a temporary cache (``MIXAGENT_CACHE``), so the
whole module costs a few builds of a few seconds each.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import random
import re
import shutil
import tokenize
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixagent.data import DataDir
from mixagent.data.benchmarks import words
from mixagent.data.builtin import (
    CODE_BENCHMARK,
    CODE_OUTPUT_BENCHMARK,
    PROSE_BENCHMARK,
    SIZES,
    TASK_NAME,
    benchmarks,
    build_builtin,
    builtin_content_hash,
    default_builtin_dir,
    plan_builtin,
    problems,
)
from mixagent.data.builtin.code import strip_docstrings
from mixagent.data.builtin.families import (
    CODE_BENCHMARK_LIBS,
    CODE_OUTPUT_BENCHMARK_LIBS,
    MATH_LIBS,
    ML_LIBS,
    NUMERIC_LIBS,
    PROSE_BENCHMARK_LIBS,
    TOOLING_LIBS,
)
from mixagent.data.builtin.prose import docstring_pages
from mixagent.data.builtin.sources import STDLIB, ParsedFile, SourceFile, parse_python, python_version, stdlib_root
from mixagent.data.shards import DTYPES
from mixagent.data.tokenizer import load_tokenizer
from mixagent.errors import ConfigError, DataError
from mixagent.trajectories.identity import (
    env_spec_hash,
    evaluated_benchmarks,
    recorded_benchmark_hashes,
    resolved_spec_hash,
)

FIELD_ROLES = {"prose": "source", "code": "target", "math": "target"}


@pytest.fixture(scope="session")
def builtin_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("builtin-cache")


@pytest.fixture(scope="session")
def builtin_tiny(builtin_cache: Path) -> Path:
    """The tiny corpus, built once into the default location under a temporary cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXAGENT_CACHE", str(builtin_cache))
        path = build_builtin(size="tiny", seed=0)
        assert path == default_builtin_dir("tiny") == builtin_cache / "builtin-tiny"
    return path


def _documents(dd: DataDir, domain: str, split: str) -> list[tuple[int, ...]]:
    """A shard cut into its documents (token tuples, EOS removed)."""
    arr = np.asarray(dd.tokens(domain, split))  # type: ignore[arg-type]
    ends = np.flatnonzero(arr == dd.manifest.tokenizer.eos_token_id)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tuple(arr[s:e].tolist()) for s, e in zip(starts, ends, strict=True)]


def _problem_questions(dd: DataDir) -> set[str]:
    tok = load_tokenizer(dd.tokenizer_dir)
    questions = set()
    for d in dd.domains:
        if d.name.endswith("-problems"):
            for split in ("train", "eval"):
                for text in tok.decode_batch([list(doc) for doc in _documents(dd, d.name, split)]):  # type: ignore[attr-defined]
                    assert text.startswith("Problem: "), text
                    questions.add(text.split("\n", 1)[0].removeprefix("Problem: "))
    return questions


# -- layout and provenance -------------------------------------------------------------------


def test_tiny_has_three_fields_with_domains(builtin_tiny: Path) -> None:
    dd = DataDir(builtin_tiny)
    m = dd.manifest
    assert {f.name: f.role for f in m.fields} == FIELD_ROLES
    for field in FIELD_ROLES:
        domains = dd.domains_of_field(field)
        assert len(domains) >= 2, field
        for d in domains:
            assert d.name.startswith(f"{field}/") and d.role == FIELD_ROLES[field] and d.description
    assert m.tokenizer.kind == "trained-bpe" and 512 <= m.tokenizer.vocab_size <= 1024
    assert m.name == "builtin-tiny"


def test_provenance_records_package_versions(builtin_tiny: Path) -> None:
    prov = DataDir(builtin_tiny).manifest.provenance
    assert prov["size"] == "tiny" and prov["seed"] == 0 and prov["builtin_version"]
    assert prov["python"]["version"] == python_version()
    assert prov["problem_generator"] == problems.GENERATOR_VERSION
    assert prov["packages"][STDLIB] == python_version()
    if "mpmath" in prov["packages"]:
        assert prov["packages"]["mpmath"] == importlib.metadata.version("mpmath")
    domains = DataDir(builtin_tiny).domain_names
    assert set(prov["domains"]) == set(domains)
    for name, entry in prov["domains"].items():
        if name.endswith("-problems"):
            assert entry["generator"] == problems.GENERATOR_VERSION
        else:
            assert entry["packages"] and entry["files_used"] >= 1
            assert entry["files_available"] >= entry["files_used"]
        assert entry["documents"] > 0 and entry["chars"] > 0


def test_token_counts_match_shard_files(builtin_tiny: Path) -> None:
    dd = DataDir(builtin_tiny)
    itemsize = np.dtype(DTYPES[dd.manifest.dtype]).itemsize
    eos = dd.manifest.tokenizer.eos_token_id
    for d in dd.domains:
        for split, rel, tokens, docs in (
            ("train", d.train_file, d.train_tokens, d.train_documents),
            ("eval", d.eval_file, d.eval_tokens, d.eval_documents),
        ):
            assert (builtin_tiny / rel).stat().st_size == tokens * itemsize
            arr = np.asarray(dd.tokens(d.name, split))  # type: ignore[arg-type]
            assert arr.size == tokens > 0 and arr[-1] == eos
            assert int((arr == eos).sum()) == docs
        assert d.train_tokens >= SIZES["tiny"].min_domain_tokens


def test_eval_split_is_disjoint_from_train(builtin_tiny: Path) -> None:
    dd = DataDir(builtin_tiny)
    for d in dd.domains:
        train = set(_documents(dd, d.name, "train"))
        held = set(_documents(dd, d.name, "eval"))
        assert held and train and not (held & train), d.name


# -- the math task ---------------------------------------------------------------------------


def test_math_task_is_held_out_and_well_formed(builtin_tiny: Path) -> None:
    dd = DataDir(builtin_tiny)
    task = dd.task(TASK_NAME)
    assert task.field == "math" and task.kind == "exact_match"
    rows = dd.task_examples(TASK_NAME)
    assert len(rows) == task.count == SIZES["tiny"].heldout_problems
    questions = [r["question"] for r in rows]
    assert len(set(questions)) == len(rows)
    for r in rows:
        assert r["prompt"] == f"Problem: {r['question']}\nAnswer:"
        assert r["answer"] and r["answer"] == r["answer"].strip()
        int(r["answer"])  # answers are integers, compared as exact strings
    levels = {(r["kind"], r["level"]) for r in rows}
    assert levels == {(k, lv) for k in problems.KINDS for lv in problems.LEVELS}
    training = _problem_questions(dd)
    assert len(training) > 100
    assert not (set(questions) & training)


_STEP = re.compile(r"(?<![\w.])(-?\d+) ([-+*/]) (-?\d+) = (-?\d+)")


def _eval_check(expr: str) -> bool:
    """Evaluate a problem's integer-only check expression without ``eval``."""

    def ev(node: ast.AST) -> int | bool:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            ops = {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}
            if type(node.op) in ops:
                return ops[type(node.op)]
            if isinstance(node.op, ast.FloorDiv | ast.Mod):
                assert b != 0
                return a // b if isinstance(node.op, ast.FloorDiv) else a % b
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq):
            return ev(node.left) == ev(node.comparators[0])
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
            return all(ev(v) for v in node.values)
        raise AssertionError(f"unexpected syntax in check: {ast.dump(node)}")

    return bool(ev(ast.parse(expr, mode="eval")))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_worked_solutions_are_arithmetically_correct(seed: int) -> None:
    rng = random.Random(seed)
    for kind in problems.KINDS:
        for level in problems.LEVELS:
            p = problems.generate(kind, rng, level)
            steps = [m.groups() for m in _STEP.finditer(p.solution)]
            assert steps, p.solution
            for a, op, b, c in steps:
                a_, b_, c_ = int(a), int(b), int(c)
                if op == "/":
                    assert b_ != 0 and a_ % b_ == 0 and a_ // b_ == c_, p.solution
                else:
                    assert {"+": a_ + b_, "-": a_ - b_, "*": a_ * b_}[op] == c_, p.solution
            # The answer is the last computed value, and it satisfies the problem's own statement.
            assert int(p.answer) == int(re.findall(r"-?\d+", p.solution)[-1]) == int(steps[-1][3])
            assert _eval_check(p.check), (p.question, p.check)
            assert p.worked().endswith(f"\nAnswer: {p.answer}") and p.prompt() + f" {p.answer}" == p.direct()


def test_training_problems_skip_excluded_questions() -> None:
    held = problems.heldout_problems(3, 80)
    questions = {p.question for p in held}
    docs = list(problems.training_documents("arithmetic", 3, 30_000, questions))
    assert docs and not ({d.split("\n", 1)[0].removeprefix("Problem: ") for d in docs} & questions)
    easy = sum(1 for d in docs if re.fullmatch(r"Problem: What is \d [-+*/] \d\?\n.*", d, re.S))
    assert easy > 0  # single-step one-digit problems exist, so a tiny model can score


# -- the code and prose benchmarks -------------------------------------------------------------

BENCHMARKS = {CODE_BENCHMARK: "code", PROSE_BENCHMARK: "prose", CODE_OUTPUT_BENCHMARK: "code"}

# The env-spec hash of envs/micro.yaml before the built-in benchmarks existed (computed on the
# commit before they were added: resolve_spec + resolved_spec_hash), and the content hash of the
# tiny corpus it was computed against on that machine. It guards v1 reproducibility: shipped
# trajectories, agents and reports are keyed by env-spec hashes, so adding benchmarks (or any
# later change to the hash) must leave the hash of a spec that evaluates none of them unchanged.
V1_MICRO_SPEC_HASH = "bad9a38c03bb1f7a66d34676"
V1_TINY_CONTENT_HASH = "6611cc607effce5203cf251fb2e8e940a17db27ba2b19c864d386b5a6810d9f8"


def _corpus_documents(dd: DataDir) -> list[str]:
    """Every training and held-out document of every domain, decoded to text."""
    tok = load_tokenizer(dd.tokenizer_dir)
    texts: list[str] = []
    for d in dd.domains:
        for split in ("train", "eval"):
            texts.extend(tok.decode_batch([list(doc) for doc in _documents(dd, d.name, split)]))  # type: ignore[attr-defined]
    return texts


def test_benchmarks_exist_with_expected_counts(builtin_tiny: Path) -> None:
    dd = DataDir(builtin_tiny)
    tok: Any = load_tokenizer(dd.tokenizer_dir)
    assert {b.name for b in dd.manifest.benchmarks} == set(BENCHMARKS)
    sources = {b.name: b for b in plan_builtin("tiny", 0).benchmarks}
    assert sources[CODE_BENCHMARK].items == sources[PROSE_BENCHMARK].items == benchmarks.ITEMS
    for name, field in BENCHMARKS.items():
        bench = dd.benchmark(name)
        rows = dd.benchmark_rows(name)
        assert bench.field == field and bench.kind == "qa" and bench.description
        assert len(rows) == bench.count == sources[name].items["tiny"]
        assert bench.sha256 == hashlib.sha256((builtin_tiny / bench.file).read_bytes()).hexdigest()
        assert bench.source["version"] == benchmarks.BENCHMARKS_VERSION
        assert set(bench.source["packages"]) and bench.source["files_used"] >= 1
        assert len({r["prompt"] for r in rows}) == len(rows)
        spread = {r["package"] for r in rows} if name != CODE_OUTPUT_BENCHMARK else {r["source"] for r in rows}
        assert len(spread) >= min(3, len(sources[name].packages)), name  # over packages, not one module
        assert len({r["prompt"].split("\n", 1)[0] for r in rows}) >= 20, name  # nor a few functions
        answer_tokens = [len(e.ids) for e in tok.encode_batch([" " + r["answer"] for r in rows], add_special_tokens=False)]
        assert max(answer_tokens) <= benchmarks.MAX_ANSWER_TOKENS  # fits a 32-token proxy context
    assert [t.name for t in dd.manifest.tasks] == [TASK_NAME]  # the math task is as it was


def test_benchmark_prompts_end_where_the_answer_starts(builtin_tiny: Path) -> None:
    """Each prompt + the delimiter + the answer is the original text: the code field's text of
    the function (the answer runs to the end of its line) or a docstring page (the answer is the
    last word of its first sentence)."""
    dd = DataDir(builtin_tiny)
    parsed_files: dict[str, ParsedFile] = {}
    plan = plan_builtin("tiny", 0)
    files = {f"{f.origin}:{f.rel}": f for b in plan.benchmarks for f in b.files}
    for name in BENCHMARKS:
        for r in dd.benchmark_rows(name):
            answer, prompt = r["answer"], r["prompt"]
            assert answer and answer == answer.strip() and "\n" not in answer
            assert prompt and not prompt[-1].isspace()
            if r["source"] not in parsed_files:
                parsed = parse_python(files[r["source"]])
                assert parsed is not None
                parsed_files[r["source"]] = parsed
            parsed = parsed_files[r["source"]]
            if name == CODE_BENCHMARK:
                assert prompt.endswith("return")
                assert f"{prompt} {answer}\n" in "".join(strip_docstrings(parsed)) + "\n"
                ast.parse(answer, mode="eval")  # a whole expression
            elif name == CODE_OUTPUT_BENCHMARK:
                assert prompt.endswith(",") and "self.assertEqual(" in prompt.rsplit("\n", 1)[-1]
                assert f"{prompt} {answer})\n" in "".join(strip_docstrings(parsed)) + "\n"
                ast.parse(answer, mode="eval")
            else:
                pages = docstring_pages(parsed, parsed.source.module)
                assert any(p.startswith(f"{prompt} {answer}") and p[len(prompt) + len(answer) + 1] in ".!?" for p in pages)


def test_benchmark_sources_are_in_no_domain() -> None:
    """Disjoint by construction: no file a benchmark may read is a file any domain may read, at
    any size, and the benchmark packages are in no family."""
    families = {*NUMERIC_LIBS, *ML_LIBS, *TOOLING_LIBS, *MATH_LIBS}
    assert not families & {*CODE_BENCHMARK_LIBS, *PROSE_BENCHMARK_LIBS, *CODE_OUTPUT_BENCHMARK_LIBS}
    plan = plan_builtin("full", 0)  # every domain there is
    domain_files = {f.path.resolve() for d in plan.domains for f in d.files}
    domain_packages = {p for d in plan.domains for p in d.packages}
    for b in plan.benchmarks:
        assert b.files, f"{b.name}: none of {b.packages} is installed"
        assert not {f.path.resolve() for f in b.files} & domain_files, b.name
        assert not set(b.packages) & domain_packages, b.name


def test_benchmarks_share_no_13_word_ngram_with_the_corpus(builtin_tiny: Path) -> None:
    dd = DataDir(builtin_tiny)
    families = {*NUMERIC_LIBS, *ML_LIBS, *TOOLING_LIBS, *MATH_LIBS}
    used = {p for entry in dd.manifest.provenance["domains"].values() for p in entry.get("packages", {})}
    n = benchmarks.NGRAM

    def ngrams(text: str) -> set[tuple[str, ...]]:
        w = words(text)
        return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}

    grams: set[tuple[str, ...]] = set()
    for name in BENCHMARKS:
        for r in dd.benchmark_rows(name):
            assert r["package"] not in families | used | {STDLIB}
            item = ngrams(f"{r['prompt']} {r['answer']}")
            assert item, "every item is long enough to be checked"
            grams |= item
    for text in _corpus_documents(dd):
        assert not ngrams(text) & grams


def test_overlapping_candidates_are_dropped() -> None:
    items = [
        {"prompt": "one two three four five six seven eight nine ten eleven twelve", "answer": "thirteen"},
        {"prompt": "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu", "answer": "nu"},
    ]
    corpus = ["text before One, two; three four five six seven eight nine ten eleven twelve THIRTEEN and after"]
    assert benchmarks.overlapping_items(items, corpus) == {0}
    assert benchmarks.overlapping_items(items, ["alpha beta gamma"]) == set()


def test_return_and_cloze_extraction() -> None:
    text = (
        "def documented(x):\n"
        '    """Docstring, which the prompt must not contain."""\n'
        "    y = x * 2\n"
        "    return y + 1\n\n"
        "def commented(x):\n"
        "    return x  # a comment ends this line\n\n"
        "def multiline(x):\n"
        "    return (x +\n"
        "            1)\n\n"
        "def boilerplate(x):\n"
        "    print(x)\n"
        "    return None\n\n"
        "class C:\n"
        "    @property\n"
        "    def size(self):\n"
        "        return len(self.items)\n"
    )
    items = {(i["prompt"], i["answer"]) for i in benchmarks.return_items(_parsed(text))}
    assert items == {
        ("def documented(x):\n    y = x * 2\n    return", "y + 1"),
        ("    @property\n    def size(self):\n        return", "len(self.items)"),
    }
    doc = (
        "def size(obj):\n"
        '    """Return the number of items in the container.\n\n    More text.\n    """\n\n'
        "def odd(obj):\n"
        '    """Wrapped first sentence of the\n    docstring."""\n'
    )
    assert benchmarks.cloze_items(_parsed(doc)) == [
        {"prompt": "snippet.size(obj)\n\nReturn the number of items in the", "answer": "container"}
    ]


def test_assertion_extraction() -> None:
    """Each one-line ``assertEqual(actual, expected)`` of a function body is an item: the
    function up to the comma, earlier assertions with their answers; the expected value blanked."""
    body = [
        "        parts = \"a b\".split()\n",
        "        self.assertEqual(len(parts), 2)\n",
        "        self.assertEqual(parts[0], 'a')  # a comment ends this line\n",
        "        self.assertEqual(parts,\n",
        "                         ['a', 'b'])\n",
        "        self.assertEqual(parts[1], 'b', msg='keyword')\n",
        "        self.assertTrue(parts, 'not an equality')\n",
        "        self.assertEqual(bool(parts), True)\n",
        "        self.assertEquals(parts[-1], parts[1])\n",
    ]
    docstring = '        """Docstring, which the prompt must not contain."""\n'
    text = "class T(unittest.TestCase):\n    def test_split(self):\n" + docstring + "".join(body)
    got = [(i["prompt"], i["answer"]) for i in benchmarks.assertion_items(_parsed(text))]
    head = "    def test_split(self):\n"
    assert got == [
        (head + body[0] + "        self.assertEqual(len(parts),", "2"),
        (head + "".join(body[:-1]) + "        self.assertEquals(parts[-1],", "parts[1]"),
    ]


def test_stale_benchmarks_are_rebuilt_to_the_same_shards(builtin_tiny: Path, tmp_path: Path) -> None:
    """A corpus built before the benchmarks existed has the same content hash; it must gain them
    (rebuilt, to byte-identical shards), not be reused without them."""
    out = tmp_path / "corpus"
    shutil.copytree(builtin_tiny, out)
    raw = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    for b in raw.pop("benchmarks"):
        (out / b["file"]).unlink()
    del raw["provenance"]["benchmarks_fingerprint"]
    (out / "manifest.json").write_text(json.dumps(raw), encoding="utf-8")
    build_builtin(out, size="tiny", seed=0)
    assert _tree_bytes(out) == _tree_bytes(builtin_tiny)
    assert DataDir(out).manifest.content_hash == DataDir(builtin_tiny).manifest.content_hash


# -- the env-spec hash ---------------------------------------------------------------------------


def test_v1_spec_hash_is_unchanged(builtin_tiny: Path, tmp_path: Path) -> None:
    import yaml

    from mixagent.envs.setup import resolve_spec
    from mixagent.envs.spec import load_env_spec

    micro = Path(__file__).resolve().parents[1] / "envs" / "micro.yaml"
    assert env_spec_hash(load_env_spec(micro), V1_TINY_CONTENT_HASH) == V1_MICRO_SPEC_HASH
    raw = yaml.safe_load(micro.read_text(encoding="utf-8"))
    raw["data"] = {"path": str(builtin_tiny)}  # the same hash as data.builtin (content, not location)
    (tmp_path / "micro.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    resolved = resolve_spec(tmp_path / "micro.yaml")
    manifest = resolved.data.manifest
    assert recorded_benchmark_hashes(manifest).keys() == set(BENCHMARKS)  # recorded, yet not hashed:
    assert resolved_spec_hash(resolved) == env_spec_hash(resolved.spec, manifest.content_hash)
    if manifest.content_hash == V1_TINY_CONTENT_HASH:  # the same installed files as when recorded
        assert resolved_spec_hash(resolved) == V1_MICRO_SPEC_HASH


def test_spec_hash_covers_the_benchmarks_it_evaluates(builtin_tiny: Path) -> None:
    from mixagent.envs.spec import load_env_spec
    from mixagent.proxy.config import TaskSpec

    spec = load_env_spec(Path(__file__).resolve().parents[1] / "envs" / "micro.yaml")
    recorded = recorded_benchmark_hashes(DataDir(builtin_tiny).manifest)
    content = DataDir(builtin_tiny).manifest.content_hash
    plain = env_spec_hash(spec, content, recorded)
    assert plain == env_spec_hash(spec, content)

    with_math = spec.model_copy(deep=True)
    with_math.eval.tasks = [TaskSpec(name=TASK_NAME)]
    assert evaluated_benchmarks(with_math.model_dump(mode="json")) == {TASK_NAME}
    assert env_spec_hash(with_math, content, recorded) == env_spec_hash(with_math, content)  # no recorded hash

    with_code = spec.model_copy(deep=True)
    with_code.reward.target_terms = {"loss": 1.0, f"{CODE_BENCHMARK}.answer_loss": 1.0}
    assert evaluated_benchmarks(with_code.model_dump(mode="json")) == {CODE_BENCHMARK}
    h = env_spec_hash(with_code, content, recorded)
    assert h != env_spec_hash(with_code, content)
    assert h != env_spec_hash(with_code, content, {**recorded, CODE_BENCHMARK: "0" * 64})
    assert h == env_spec_hash(with_code, content, {CODE_BENCHMARK: recorded[CODE_BENCHMARK]})



# -- reuse, rebuild, determinism -------------------------------------------------------------


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def test_rebuild_reuses_an_up_to_date_corpus(
    builtin_tiny: Path, builtin_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIXAGENT_CACHE", str(builtin_cache))
    stamps = {p: p.stat().st_mtime_ns for p in builtin_tiny.rglob("*") if p.is_file()}
    assert build_builtin(size="tiny", seed=0) == builtin_tiny
    assert {p: p.stat().st_mtime_ns for p in builtin_tiny.rglob("*") if p.is_file()} == stamps


def test_reuse_removes_a_killed_builds_leftover(
    builtin_tiny: Path, builtin_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build killed mid-way leaves ``.builtin-tiny.building-HOST-PID-...``; reusing the corpus
    afterwards must remove it (only a dead owner's), not just a later rebuild."""
    import socket
    import subprocess
    import sys

    monkeypatch.setenv("MIXAGENT_CACHE", str(builtin_cache))
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that is certainly gone
    leftover = builtin_tiny.parent / f".{builtin_tiny.name}.building-{socket.gethostname()}-{proc.pid}-x1"
    (leftover / "_extract").mkdir(parents=True)
    assert build_builtin(size="tiny", seed=0) == builtin_tiny
    assert not leftover.exists()


def test_seed_or_size_change_the_content_hash() -> None:
    base = builtin_content_hash(plan_builtin("tiny", 0))
    assert builtin_content_hash(plan_builtin("tiny", 0)) == base
    assert builtin_content_hash(plan_builtin("tiny", 1)) != base
    assert builtin_content_hash(plan_builtin("small", 0)) != base


def test_changing_the_seed_rebuilds(builtin_tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    shutil.copytree(builtin_tiny, out)
    old = DataDir(out).manifest
    build_builtin(out, size="tiny", seed=1)
    new = DataDir(out).manifest
    assert new.content_hash != old.content_hash and new.provenance["seed"] == 1
    for name in BENCHMARKS:  # the benchmarks are drawn from the seed too
        assert DataDir(out).benchmark(name).sha256 != DataDir(builtin_tiny).benchmark(name).sha256
    assert _tree_bytes(out) != _tree_bytes(builtin_tiny)
    assert not list(tmp_path.glob(".corpus.*"))  # no leftover temporary or old directories


def test_builds_are_byte_identical(builtin_tiny: Path, tmp_path: Path) -> None:
    """Same size, seed and installed files: identical shards, tokenizer and task, also when the
    domains are extracted by two worker processes instead of one."""
    other = build_builtin(tmp_path / "again", size="tiny", seed=0, workers=2)
    assert _tree_bytes(other) == _tree_bytes(builtin_tiny)
    assert {DataDir(other).benchmark(name).file for name in BENCHMARKS} <= set(_tree_bytes(other))
    assert DataDir(other).manifest.benchmarks == DataDir(builtin_tiny).manifest.benchmarks
    assert DataDir(other).manifest.content_hash == DataDir(builtin_tiny).manifest.content_hash


def test_corrupt_corpus_is_rebuilt(builtin_tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    shutil.copytree(builtin_tiny, out)
    shard = out / DataDir(out).domains[0].train_file
    shard.write_bytes(shard.read_bytes()[:-2])
    build_builtin(out, size="tiny", seed=0)
    assert _tree_bytes(out) == _tree_bytes(builtin_tiny)


def test_refuses_to_replace_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    keep = tmp_path / "project" / "notes.txt"
    keep.write_text("precious")
    with pytest.raises(DataError, match="not a built-in corpus"):
        build_builtin(tmp_path / "project", size="tiny")
    assert keep.read_text() == "precious"


def test_unknown_size_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tiny, small, full"):
        build_builtin(tmp_path / "x", size="huge")


def test_cli_reports_reuse(builtin_tiny: Path, builtin_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from mixagent.cli.main import app

    monkeypatch.setenv("MIXAGENT_CACHE", str(builtin_cache))
    result = CliRunner().invoke(app, ["data", "builtin", "--size", "tiny"])
    assert result.exit_code == 0, result.output
    assert "reused" in result.output and str(builtin_tiny) in result.output
    assert "math" in result.output and TASK_NAME in result.output


# -- extraction ------------------------------------------------------------------------------


def _parsed(text: str) -> ParsedFile:
    src = SourceFile(root=Path("."), rel="snippet.py", package="snippet", size=len(text))
    return ParsedFile(src, text, ast.parse(text))


def test_strip_docstrings_keeps_code_valid() -> None:
    text = (
        '"""Module doc."""\n'
        "import os  # comment stays\n\n"
        "def only():\n"
        '    """Only a docstring: the body must survive."""\n\n'
        'def inline(): "doc on the def line"\n\x0c\n'
        "class C:\n"
        "    '''Docstring with ünïcödé,\n    two lines.'''\n"
        "    x = 1\n\n"
        '    def m(self): "doc"; return 2\n'
    )
    out = "".join(strip_docstrings(_parsed(text)))
    tree = ast.parse(out)
    assert all(
        ast.get_docstring(n) is None
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
    )
    assert "# comment stays" in out and "ünïcödé" not in out and "x = 1" in out and "return 2" in out


@pytest.mark.parametrize("rel", ["textwrap.py", "json/decoder.py", "dataclasses.py", "email/utils.py"])
def test_strip_docstrings_on_stdlib_files(rel: str) -> None:
    path = stdlib_root() / rel
    if not path.is_file():
        pytest.skip(f"{rel} is not in this Python installation")
    parsed = parse_python(SourceFile(root=stdlib_root(), rel=rel, package=rel.split("/")[0], size=0, stdlib=True))
    assert parsed is not None
    out = "".join(strip_docstrings(parsed))
    tree = ast.parse(out)
    assert not any(
        ast.get_docstring(n)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
    )
    lines = iter(parsed.text.splitlines(keepends=True))
    comments = [t.string for t in tokenize.generate_tokens(lambda: next(lines, "")) if t.type == tokenize.COMMENT]
    assert comments and all(c in out for c in comments)


def test_a_corpus_other_than_the_shipped_one_is_named(caplog, monkeypatch) -> None:
    """Other package versions build another corpus; the build says the shipped numbers do not
    apply and how to reproduce them, and stays silent on the shipped corpus or unshipped sizes."""
    import logging

    from mixagent.data.builtin import build

    monkeypatch.setattr(build, "SHIPPED_CONTENT_HASHES", {("small", 0): "a" * 64})
    with caplog.at_level(logging.WARNING, logger=build.log.name):
        build._check_shipped("small", 0, "a" * 64)
        build._check_shipped("tiny", 0, "b" * 64)
        assert not caplog.records
        build._check_shipped("small", 0, "b" * 64)
    (rec,) = caplog.records
    assert "bbbbbbbbbbbb" in rec.getMessage() and "aaaaaaaaaaaa" in rec.getMessage()
    assert "-c constraints.txt" in rec.getMessage()
