"""``mixagent data build``: user corpora (jsonl/parquet/text/arrow) into a validated data directory.

Every test writes its own tiny corpus (a few dozen short documents per domain over disjoint word
lists, vocab ~320) so a build takes a fraction of a second.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixagent.data import DataDir
from mixagent.data.build import (
    DATA_FORMAT_VERSION,
    BuildConfig,
    build_data_dir,
    infer_format,
    iter_input_batches,
    plan_build,
)
from mixagent.data.tokenizer import load_tokenizer, tokenizer_hash, train_bpe
from mixagent.data.writer import is_eval_document
from mixagent.errors import ConfigError, DataError
from mixagent.utils.io import sha256_file

VOCABS = {
    k: v.split()
    for k, v in {
        "hist": "the king ruled a long war about history and people and places empire",
        "docs": "documentation explains how the function returns value when called argument",
        "algebra": "one two three plus minus equals times solve for answer is",
        "geometry": "triangle angle circle radius area perimeter square side length degrees",
    }.items()
}
EVAL_FRACTION = 0.25


def make_docs(kind: str, n: int, seed: int = 0) -> list[str]:
    rnd = random.Random(f"{seed}-{kind}")
    return [
        " ".join(rnd.choice(VOCABS[kind]) for _ in range(rnd.randint(20, 45))) for _ in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, columns: dict[str, list[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def make_corpus(root: Path) -> dict[str, list[str]]:
    """web: two jsonl files with a 'topic' column; math: one parquet file ('body', two kinds)."""
    hist, docs = make_docs("hist", 40), make_docs("docs", 40)
    write_jsonl(root / "corpora/web-1.jsonl", [{"text": t, "topic": "hist"} for t in hist])
    write_jsonl(root / "corpora/web-2.jsonl", [{"text": t, "topic": "docs", "x": 1} for t in docs])
    algebra, geometry = make_docs("algebra", 40), make_docs("geometry", 40)
    mixed = [t for pair in zip(algebra, geometry, strict=True) for t in pair]
    write_parquet(root / "corpora/math.parquet", {"body": mixed, "id": list(range(len(mixed)))})
    return {"web/hist": hist, "web/docs": docs, "algebra": algebra, "geometry": geometry}


def base_config(**top: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "tiny",
        "tokenizer": {"train": {"vocab_size": 320, "sample_documents": 200}},
        "eval_fraction": EVAL_FRACTION,
        "min_sequence_tokens": 32,
        "seed": 0,
        "fields": {
            "web": {
                "role": "source",
                "inputs": [{"path": "corpora/web-*.jsonl", "domain": {"column": "topic"}}],
            },
            "math": {
                "role": "target",
                "description": "arithmetic and geometry",
                "inputs": [
                    {
                        "path": "corpora/math.parquet",
                        "text_column": "body",
                        "domain": {"constant": "all", "description": "all the math"},
                    }
                ],
            },
        },
    }
    cfg.update(top)
    return cfg


def write_config(root: Path, cfg: dict[str, Any], name: str = "build.yaml") -> Path:
    path = root / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, list[str]]]:
    return tmp_path, make_corpus(tmp_path)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, list[str]]]:
    """One build of the base config, shared by the read-only checks."""
    root = tmp_path_factory.mktemp("built")
    docs = make_corpus(root)
    out = build_data_dir(write_config(root, base_config()), root / "out")
    return root, out, docs


def decode_split(dd: DataDir, domain: str, split: str) -> list[str]:
    tok = load_tokenizer(dd.tokenizer_dir)
    ids = np.asarray(dd.tokens(domain, split), dtype=np.int64)
    eos = dd.manifest.tokenizer.eos_token_id
    ends = np.flatnonzero(ids == eos)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [
        tok.decode(ids[s:e].tolist(), skip_special_tokens=False)
        for s, e in zip(starts, ends, strict=True)
    ]


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".building-" in p.name or ".old-" in p.name]


# -- what a good build contains --------------------------------------------------------------------
def test_manifest_records_fields_domains_and_provenance(built):
    root, out, _ = built
    m = DataDir(out).manifest
    assert m.name == "tiny"
    assert {(f.name, f.role) for f in m.fields} == {("web", "source"), ("math", "target")}
    assert m.field("math").description == "arithmetic and geometry"
    assert [d.name for d in m.domains] == ["math/all", "web/docs", "web/hist"]
    roles = {d.name: (d.field, d.role) for d in m.domains}
    assert roles["web/hist"] == ("web", "source") and roles["math/all"] == ("math", "target")
    assert DataDir(out).domain("math/all").description == "all the math"
    assert "topic" in DataDir(out).domain("web/hist").description
    assert m.tokenizer.kind == "trained-bpe" and m.tokenizer.hash == tokenizer_hash(
        out / "tokenizer"
    )
    assert len(m.content_hash) == 64

    prov = m.provenance
    assert prov["data_format_version"] == DATA_FORMAT_VERSION
    assert prov["config"] == BuildConfig.model_validate(base_config()).model_dump(mode="json")
    assert prov["config_file"] == str((root / "build.yaml").resolve())
    assert set(prov["packages"]) >= {"mixagent", "datasets", "tokenizers", "pyarrow", "python"}
    assert prov["packages"]["python"] == ".".join(map(str, sys.version_info[:3]))
    files = {Path(f["path"]).name: f for i in prov["inputs"] for f in i["files"]}
    assert set(files) == {"web-1.jsonl", "web-2.jsonl", "math.parquet"}
    for name, f in files.items():
        path = root / "corpora" / name
        assert f["sha256"] == sha256_file(path) and f["size"] == path.stat().st_size
    assert {i["input"]: i["documents"] for i in prov["inputs"]} == {
        "fields.web.inputs[0]": 80,
        "fields.math.inputs[0]": 80,
    }
    assert prov["tokenizer_source"] == {"kind": "trained-bpe", "sample_documents": 160}


def test_token_counts_match_documents_and_files_and_eval_is_disjoint(built):
    _, out, docs = built
    dd = DataDir(out)
    tok = load_tokenizer(dd.tokenizer_dir)
    expected = {
        "web/hist": docs["web/hist"],
        "web/docs": docs["web/docs"],
        "math/all": [
            t for pair in zip(docs["algebra"], docs["geometry"], strict=True) for t in pair
        ],
    }
    for name, texts in expected.items():
        d = dd.domain(name)
        is_eval = [is_eval_document(t, EVAL_FRACTION) for t in texts]
        n_tokens = [len(tok.encode(t, add_special_tokens=False).ids) + 1 for t in texts]
        assert d.eval_tokens == sum(n for n, e in zip(n_tokens, is_eval, strict=True) if e)
        assert d.train_tokens == sum(n for n, e in zip(n_tokens, is_eval, strict=True) if not e)
        assert d.train_documents + d.eval_documents == len(texts) and d.eval_documents > 0
        for split, count in (("train", d.train_tokens), ("eval", d.eval_tokens)):
            file = out / (d.train_file if split == "train" else d.eval_file)
            assert file.stat().st_size == count * np.dtype(dd.manifest.dtype).itemsize
        train, ev = decode_split(dd, name, "train"), decode_split(dd, name, "eval")
        assert train == [t for t, e in zip(texts, is_eval, strict=True) if not e]  # order kept
        assert ev == [t for t, e in zip(texts, is_eval, strict=True) if e]
        assert not set(train) & set(ev)


def test_output_is_readable_by_others_and_leaves_no_temporaries(built):
    root, out, _ = built
    assert leftovers(root) == []
    assert (out.stat().st_mode & 0o055) == (0o755 & ~_umask()) & 0o055
    assert json.loads((out / "manifest.json").read_text())["schema_version"] == 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- reuse and rebuild -----------------------------------------------------------------------------
def _fingerprint(out: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in [out, *sorted(out.rglob("*"))]
    }


def test_rebuild_with_same_inputs_reuses_untouched(project, caplog):
    root, _ = project
    cfg = write_config(root, base_config())
    out = build_data_dir(cfg, root / "out")
    before, hash_before = _fingerprint(out), DataDir(out).manifest.content_hash
    with caplog.at_level(logging.INFO, logger="mixagent.data.build"):
        assert build_data_dir(cfg, root / "out") == root / "out"
    assert "reusing" in caplog.text and "building" not in caplog.text
    assert _fingerprint(out) == before
    assert DataDir(out).manifest.content_hash == hash_before

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mixagent.data.build"):
        build_data_dir(cfg, root / "out", force=True)
    assert "building" in caplog.text
    assert _fingerprint(out)["."] != before["."]  # a new directory took its place
    assert DataDir(out).manifest.content_hash == hash_before  # same inputs, same hash
    assert leftovers(root) == []


def test_changed_input_content_rebuilds(project, caplog):
    root, docs = project
    cfg = write_config(root, base_config())
    out = build_data_dir(cfg, root / "out")
    old = DataDir(out).manifest
    extra = make_docs("hist", 3, seed=7)
    write_jsonl(
        root / "corpora/web-1.jsonl",
        [{"text": t, "topic": "hist"} for t in docs["web/hist"] + extra],
    )
    with caplog.at_level(logging.INFO, logger="mixagent.data.build"):
        build_data_dir(cfg, out)
    assert "building" in caplog.text
    new = DataDir(out).manifest
    assert new.content_hash != old.content_hash
    hist = DataDir(out).domain("web/hist")
    assert hist.train_documents + hist.eval_documents == 43


def test_changed_input_file_set_rebuilds(project):
    root, _ = project
    cfg = write_config(root, base_config())
    h1 = build_data_dir(cfg, root / "out") and DataDir(root / "out").manifest.content_hash
    write_jsonl(
        root / "corpora/web-3.jsonl",
        [{"text": t, "topic": "new"} for t in make_docs("docs", 20, 3)],
    )
    build_data_dir(cfg, root / "out")
    m = DataDir(root / "out").manifest
    assert m.content_hash != h1 and "web/new" in [d.name for d in m.domains]


def test_broad_glob_skips_the_output_directory(project):
    """'**/*.json*' would match the output's own manifest and tokenizer files on the second run."""
    root, _ = project
    cfg = base_config()
    cfg["fields"]["web"]["inputs"][0].update(path="**/*.json*", domain={"constant": "all"})
    path = write_config(root, cfg)
    build_data_dir(path, root / "corpora" / "out")
    before = _fingerprint(root / "corpora" / "out")
    build_data_dir(path, root / "corpora" / "out")
    assert _fingerprint(root / "corpora" / "out") == before


@pytest.mark.parametrize(
    "change",
    [
        {"eval_fraction": 0.3},
        {"seed": 1},
        {"name": "renamed"},
        {"tokenizer": {"train": {"vocab_size": 330, "sample_documents": 200}}},
    ],
)
def test_changed_config_rebuilds(project, change):
    root, _ = project
    build_data_dir(write_config(root, base_config()), root / "out")
    old = DataDir(root / "out").manifest.content_hash
    build_data_dir(write_config(root, base_config(**change)), root / "out")
    m = DataDir(root / "out").manifest
    assert m.content_hash != old
    assert m.provenance["config"] == BuildConfig.model_validate(base_config(**change)).model_dump(
        mode="json"
    )


@pytest.fixture(scope="module")
def plan_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plan")
    make_corpus(root)
    return root


DEFAULTS = {
    "batch_size": 1000,
    "max_domains": 256,
    "min_sequence_tokens": 32,
    "seed": 0,
    "text_column": "text",
}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    explicit=st.sets(st.sampled_from(sorted(DEFAULTS))),
    reverse=st.booleans(),
    seed=st.integers(1, 99),
)
def test_content_hash_ignores_spelling_but_not_content(plan_root, explicit, reverse, seed):
    """Spelling a default out or reordering keys keeps the hash; a changed value changes it."""
    ref = plan_build(BuildConfig.model_validate(base_config()), plan_root).content_hash
    cfg = base_config()
    for key in explicit:
        target = cfg["fields"]["web"]["inputs"][0] if key == "text_column" else cfg
        target[key] = DEFAULTS[key]
    if reverse:
        cfg = dict(reversed(list(cfg.items())))
    assert plan_build(BuildConfig.model_validate(cfg), plan_root).content_hash == ref
    changed = plan_build(BuildConfig.model_validate(base_config(seed=seed)), plan_root)
    assert changed.content_hash != ref


# -- domain assignment -----------------------------------------------------------------------------
def test_cluster_domains_separate_topics_and_record_top_terms(project):
    root, docs = project
    cfg = base_config()
    cfg["fields"]["math"]["inputs"][0]["domain"] = {"cluster": {"k": 2, "top_terms": 5}}
    out = build_data_dir(write_config(root, cfg), root / "out")
    dd = DataDir(out)
    names = [d.name for d in dd.domains_of_field("math")]
    assert names == ["math/cluster-0", "math/cluster-1"]
    kinds = {"algebra": set(docs["algebra"]), "geometry": set(docs["geometry"])}
    seen = set()
    for name in names:
        texts = decode_split(dd, name, "train") + decode_split(dd, name, "eval")
        (kind,) = {k for k, s in kinds.items() if set(texts) & s}  # each cluster is pure
        assert set(texts) == kinds[kind]
        seen.add(kind)
        terms = dd.domain(name).description.split("top terms: ")[1].split(", ")
        assert 1 <= len(terms) <= 5 and set(terms) <= set(VOCABS[kind])
    assert seen == {"algebra", "geometry"}
    clusters = dd.manifest.provenance["clusters"]["fields.math.inputs[0]"]
    assert clusters["k"] == 2 and sum(clusters["sample_sizes"]) == 80

    # Seeded: a forced rebuild gives the very same shards.
    shards = {p.name: p.read_bytes() for p in (out / "shards").iterdir()}
    build_data_dir(write_config(root, cfg), out, force=True)
    assert {p.name: p.read_bytes() for p in (out / "shards").iterdir()} == shards


def _cluster_cfg(**cluster: Any) -> dict[str, Any]:
    cfg = base_config()
    cfg["fields"]["math"]["inputs"][0]["domain"] = {"cluster": {"k": 2, "top_terms": 5, **cluster}}
    return cfg


def test_info_prints_each_clusters_top_terms(project):
    from typer.testing import CliRunner

    from mixagent.cli.main import app

    root, _ = project
    out = build_data_dir(write_config(root, _cluster_cfg()), root / "out")
    res = CliRunner().invoke(app, ["data", "info", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    lines = {ln.split(": ")[0].strip(): ln.split(": ", 1)[1] for ln in res.output.splitlines()
             if ln.startswith("  math/cluster-")}
    assert set(lines) == {"math/cluster-0", "math/cluster-1"}
    kinds = set()
    for terms in lines.values():  # each cluster's terms come from one topic's words
        (kind,) = {k for k in ("algebra", "geometry") if set(terms.split(", ")) <= set(VOCABS[k])}
        kinds.add(kind)
    assert kinds == {"algebra", "geometry"}
    clusters = DataDir(out).manifest.provenance["clusters"]["fields.math.inputs[0]"]
    assert clusters["domains"] == ["math/cluster-0", "math/cluster-1"]


def test_clusters_can_be_named_and_names_are_validated(project):
    root, _ = project
    plain = build_data_dir(write_config(root, _cluster_cfg()), root / "plain")
    plain_terms = DataDir(plain).manifest.provenance["clusters"]["fields.math.inputs[0]"]
    out = build_data_dir(write_config(root, _cluster_cfg(names=["first", "second"])), root / "out")
    dd = DataDir(out)
    assert [d.name for d in dd.domains_of_field("math")] == ["math/first", "math/second"]
    clusters = dd.manifest.provenance["clusters"]["fields.math.inputs[0]"]
    assert clusters["domains"] == ["math/first", "math/second"]
    assert clusters["top_terms"] == plain_terms["top_terms"]  # naming changes no clustering
    for i, name in enumerate(["first", "second"]):
        assert dd.tokens(f"math/{name}").tobytes() == DataDir(plain).tokens(
            f"math/cluster-{i}").tobytes()
        assert "top terms: " in dd.domain(f"math/{name}").description
    # a partial mapping names some clusters; the others keep '<prefix>-<i>'
    out2 = build_data_dir(write_config(root, _cluster_cfg(names={1: "second"})), root / "out2")
    assert [d.name for d in DataDir(out2).domains_of_field("math")] == [
        "math/cluster-0", "math/second"]
    # names do not change the content hash when absent: old outputs stay valid
    base = plan_build(BuildConfig.model_validate(_cluster_cfg()), root).content_hash
    spelled = plan_build(BuildConfig.model_validate(_cluster_cfg(names=None)), root).content_hash
    assert base == spelled != plan_build(
        BuildConfig.model_validate(_cluster_cfg(names=["a", "b"])), root).content_hash

    bad = [
        ({"names": ["only-one"]}, "1 names for k=2"),
        ({"names": ["same", "same"]}, "distinct"),
        ({"names": ["ok", "has/slash"]}, "has/slash"),
        ({"names": ["ok", ""]}, "must start with a letter"),
        ({"names": {2: "x"}}, r"indices \[2\] outside 0\.\.1"),
    ]
    for cluster, message in bad:
        with pytest.raises(ConfigError, match="names") as err:
            build_data_dir(write_config(root, _cluster_cfg(**cluster)), root / "bad")
        assert __import__("re").search(message, str(err.value)), str(err.value)
    cfg = _cluster_cfg(names=["proofs", "b"])
    cfg["fields"]["math"]["inputs"].append(
        {"path": "corpora/web-1.jsonl", "domain": {"constant": "proofs"}})
    with pytest.raises(ConfigError, match="'proofs' is also a cluster"):
        build_data_dir(write_config(root, cfg), root / "bad")
    assert not (root / "bad").exists()
    # a column value that lands on a cluster's domain would merge them silently: an error
    cfg = _cluster_cfg(names=["hist", "b"])
    cfg["fields"]["math"]["inputs"].append(
        {"path": "corpora/web-1.jsonl", "domain": {"column": "topic"}})
    with pytest.raises(DataError, match="'math/hist' is also a cluster"):
        build_data_dir(write_config(root, cfg), root / "bad")


def test_two_clustered_inputs_in_a_field_need_distinct_prefixes(project):
    root, _ = project
    cfg = base_config()
    inp = {"path": "corpora/math.parquet", "text_column": "body", "domain": {"cluster": {"k": 2}}}
    cfg["fields"]["math"]["inputs"] = [inp, inp]
    with pytest.raises(ConfigError, match="prefix"):
        build_data_dir(write_config(root, cfg), root / "out")


def test_column_default_and_max_documents_and_text_and_arrow_formats(project):
    root, docs = project
    write_jsonl(
        root / "corpora/web-1.jsonl",
        [{"text": t, "topic": None if i % 2 else "hist"} for i, t in enumerate(docs["web/hist"])],
    )
    (root / "corpora/notes.txt").write_text("\n\n".join(make_docs("docs", 30, 5)), encoding="utf-8")
    arrow = pa.table({"text": make_docs("algebra", 30, 6)})
    with (
        pa.OSFile(str(root / "corpora/extra.arrow"), "wb") as sink,
        pa.ipc.new_stream(sink, arrow.schema) as w,
    ):
        w.write_table(arrow)
    cfg = base_config()
    cfg["fields"]["web"]["inputs"] = [
        {
            "path": ["corpora/web-1.jsonl", "corpora/web-2.jsonl"],
            "domain": {"column": "topic", "default": "misc"},
        },
        {"path": "corpora/notes.txt", "text_unit": "paragraph", "domain": {"constant": "notes"}},
    ]
    cfg["fields"]["math"]["inputs"].append({"path": "corpora/extra.arrow", "max_documents": 25})
    out = build_data_dir(write_config(root, cfg), root / "out")
    dd = DataDir(out)
    counts = {d.name: d.train_documents + d.eval_documents for d in dd.domains}
    assert counts == {
        "web/hist": 20,
        "web/misc": 20,
        "web/docs": 40,
        "web/notes": 30,
        "math/all": 105,
    }
    assert set(
        decode_split(dd, "web/notes", "train") + decode_split(dd, "web/notes", "eval")
    ) == set(make_docs("docs", 30, 5))


def test_adopted_local_tokenizer(project, caplog):
    root, docs = project
    src = root / "my-tokenizer"
    info = train_bpe([t for v in docs.values() for t in v], 350, src)
    cfg = base_config(tokenizer={"path": "my-tokenizer"})
    out = build_data_dir(write_config(root, cfg), root / "out")
    m = DataDir(out).manifest
    assert m.tokenizer.kind == "pretrained" and m.tokenizer.hash == info.hash
    assert m.tokenizer.vocab_size == info.vocab_size
    assert m.provenance["tokenizer_source"]["kind"] == "pretrained"
    assert decode_split(DataDir(out), "web/hist", "train")[0] in docs["web/hist"]

    # Editing the adopted tokenizer (here: its config) is a change of input: rebuild.
    tc = src / "tokenizer_config.json"
    tc.write_text(json.dumps({**json.loads(tc.read_text()), "model_max_length": 77}))
    with caplog.at_level(logging.INFO, logger="mixagent.data.build"):
        build_data_dir(write_config(root, cfg), out)
    assert "building" in caplog.text
    assert DataDir(out).manifest.content_hash != m.content_hash


def test_reader_streams_bounded_batches(plan_root, tmp_path):
    cfg = base_config()
    cfg["fields"]["web"]["inputs"][0]["max_documents"] = 50
    plan = plan_build(BuildConfig.model_validate(cfg), plan_root)
    web = next(i for i in plan.inputs if i.field == "web")
    it = iter_input_batches(web, 7, str(tmp_path))
    first = next(it)  # a generator: the first batch comes before the rest is read
    sizes = [len(first.texts)] + [len(b.texts) for b in it]
    assert max(sizes) <= 7 and sum(sizes) == 50


def test_memory_does_not_grow_with_corpus_size(built, tmp_path, monkeypatch):
    """10x the documents, same peak: reads stream in batches and nothing keeps the texts.

    Shard write buffers are shrunk so they do not hide growth; tracemalloc sees Python and numpy
    allocations (the ten times larger corpus is ~1.3 MB of text).
    """
    import tracemalloc

    from mixagent.data.shards import ShardWriter

    monkeypatch.setattr(ShardWriter.__init__, "__defaults__", (4096,))
    peaks = []
    for n in (500, 5000):
        root = tmp_path / str(n)
        docs = make_docs("hist", n // 2) + make_docs("docs", n // 2)
        (root / "c").mkdir(parents=True)
        pq.write_table(pa.table({"text": docs}), root / "c/a.parquet", row_group_size=64)
        cfg = base_config(
            batch_size=32, tokenizer={"train": {"vocab_size": 320, "sample_documents": 50}}
        )
        cfg["fields"] = {"f": {"role": "target", "inputs": [{"path": "c/a.parquet"}]}}
        tracemalloc.start()
        try:
            build_data_dir(write_config(root, cfg), root / "out")
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert DataDir(root / "out").domain("f/all").train_documents > n // 2
    assert peaks[1] - peaks[0] < 600_000, peaks


def test_infer_format():
    assert infer_format("a/b.jsonl") == "json" and infer_format("x.json.gz") == "json"
    assert infer_format("x.parquet") == "parquet" and infer_format("x.txt") == "text"
    assert infer_format("x.arrow") == "arrow" and infer_format("x.bin") is None


# -- bad input: a clear error, no output -----------------------------------------------------------
def _set_input(key: str, value: Any, field: str = "web"):
    def apply(cfg: dict[str, Any], root: Path) -> None:
        cfg["fields"][field]["inputs"][0][key] = value

    return apply


def _corrupt(name: str, data: bytes, field: str = "math", **extra: Any):
    def apply(cfg: dict[str, Any], root: Path) -> None:
        (root / "corpora" / name).write_bytes(data)
        cfg["fields"][field]["inputs"][0].update(path=f"corpora/{name}", **extra)

    return apply


def _top(key: str, value: Any):
    def apply(cfg: dict[str, Any], root: Path) -> None:
        cfg[key] = value

    return apply


def _role(cfg: dict[str, Any], root: Path) -> None:
    cfg["fields"]["web"]["role"] = "sauce"


def _empty_texts(cfg: dict[str, Any], root: Path) -> None:
    write_jsonl(root / "corpora/blank.jsonl", [{"text": "  "}, {"text": ""}, {"text": None}])
    cfg["fields"]["math"]["inputs"][0].update(path="corpora/blank.jsonl", text_column="text")


def _missing_value(cfg: dict[str, Any], root: Path) -> None:
    write_jsonl(root / "corpora/web-2.jsonl", [{"text": "some words here", "topic": ""}])


BAD = {
    "missing text column (jsonl)": (
        _set_input("text_column", "content"),
        DataError,
        ["'content'", "web-1.jsonl", "columns are: text, topic"],
    ),
    "missing text column (parquet)": (
        _set_input("text_column", "text", field="math"),
        DataError,
        ["'text'", "math.parquet", "columns are: body, id"],
    ),
    "missing domain column": (
        _set_input("domain", {"column": "topik"}),
        DataError,
        ["'topik'", "domain.column"],
    ),
    "glob matches nothing": (
        _set_input("path", "corpora/nothing-*.jsonl"),
        DataError,
        ["nothing-*.jsonl", "matches no files"],
    ),
    "nonexistent file": (
        _set_input("path", "corpora/missing.jsonl"),
        DataError,
        ["file not found", "missing.jsonl"],
    ),
    "directory as path": (_set_input("path", "corpora"), DataError, ["is a directory", "glob"]),
    "corrupt parquet": (
        _corrupt("bad.parquet", b"not parquet at all" * 20),
        DataError,
        ["bad.parquet", "parquet"],
    ),
    "corrupt jsonl": (
        _corrupt("bad.jsonl", b'{"text": "fine"}\n{"text": brok\n', text_column="text"),
        DataError,
        ["bad.jsonl", "cannot read as json"],
    ),
    "unknown extension": (
        _corrupt("data.bin", b"x", text_column="text"),
        DataError,
        ["data.bin", "format"],
    ),
    "non-text column": (
        _set_input("text_column", "id", field="math"),
        DataError,
        ["'id'", "must hold text"],
    ),
    "unknown config key": (_top("eval_fracton", 0.1), ConfigError, ["eval_fracton", "unknown key"]),
    "unknown input key": (
        _set_input("txt_column", "x"),
        ConfigError,
        ["txt_column", "unknown key"],
    ),
    "unknown role": (_role, ConfigError, ["fields.web.role", "'source' or 'target'"]),
    "bad field name": (
        _top("fields", {"a/b": base_config()["fields"]["web"]}),
        ConfigError,
        ["'a/b'"],
    ),
    "two tokenizers": (
        _top("tokenizer", {"train": {"vocab_size": 320}, "path": "x"}),
        ConfigError,
        ["exactly one"],
    ),
    "missing tokenizer dir": (
        _top("tokenizer", {"path": "nope"}),
        DataError,
        ["tokenizer.path", "nope"],
    ),
    "empty domain": (_empty_texts, DataError, ["fields.math.inputs[0]", "no non-empty documents"]),
    "missing domain value": (_missing_value, DataError, ["'topic'", "domain.default"]),
    "domain shorter than a sequence": (
        _top("min_sequence_tokens", 100_000),
        DataError,
        ["fewer than one sequence", "100000"],
    ),
    "too many clusters": (
        _set_input("domain", {"cluster": {"k": 500, "sample_documents": 1000}}),
        DataError,
        ["cluster", "lower cluster.k"],
    ),
    "too many domains": (_top("max_domains", 2), DataError, ["max_domains=2"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gives_clear_error_and_no_output(project, case):
    root, _ = project
    mutate, exc, fragments = BAD[case]
    cfg = base_config()
    mutate(cfg, root)
    with pytest.raises(exc) as info:
        build_data_dir(write_config(root, cfg), root / "out")
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    assert not (root / "out").exists()
    assert leftovers(root) == []


def test_failed_rebuild_keeps_previous_good_output(project):
    root, _ = project
    cfg = write_config(root, base_config())
    out = build_data_dir(cfg, root / "out")
    good = _fingerprint(out)
    (root / "corpora/math.parquet").write_bytes(b"truncated")
    with pytest.raises(DataError, match=r"math\.parquet"):
        build_data_dir(cfg, out)
    assert _fingerprint(out) == good
    DataDir(out)  # still valid
    assert leftovers(root) == []


def test_refuses_to_replace_an_unrelated_directory(project):
    root, _ = project
    cfg = write_config(root, base_config())
    mine = root / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    (mine / "manifest.json").write_text('{"name": "some other tool"}')
    for force in (False, True):
        with pytest.raises(DataError, match="not a mixagent data directory"):
            build_data_dir(cfg, mine, force=force)
    assert (mine / "thesis.tex").read_text() == "years of work"
    (root / "afile").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        build_data_dir(cfg, root / "afile")
    (root / "empty").mkdir()
    DataDir(build_data_dir(cfg, root / "empty"))  # an empty directory is fine to fill


def test_corrupt_previous_output_is_rebuilt(project, caplog):
    root, _ = project
    cfg = write_config(root, base_config())
    out = build_data_dir(cfg, root / "out")
    shard = next((out / "shards").iterdir())
    shard.write_bytes(shard.read_bytes()[:-2])
    with caplog.at_level(logging.INFO, logger="mixagent.data.build"):
        build_data_dir(cfg, out)
    assert "rebuilding" in caplog.text and "building" in caplog.text
    DataDir(out)


def test_no_datasets_cache_written(project):
    import datasets

    cache = Path(datasets.config.HF_DATASETS_CACHE)
    before = sorted(cache.rglob("*")) if cache.exists() else []
    root, _ = project
    build_data_dir(write_config(root, base_config()), root / "out")
    assert (sorted(cache.rglob("*")) if cache.exists() else []) == before


def test_build_never_touches_the_network(project, monkeypatch):
    """Local inputs and a local tokenizer: no DNS lookup, no connection (datasets would ping)."""
    import socket

    calls: list[str] = []

    def refuse(name: str):
        def fn(*args: Any, **kwargs: Any) -> Any:
            calls.append(f"{name}{args[:2]}")
            raise OSError("network disabled in this test")

        return fn

    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    root, docs = project
    train_bpe([t for v in docs.values() for t in v], 320, root / "tok")
    cfg = base_config(tokenizer={"path": "tok"})
    cfg["fields"]["math"]["inputs"][0]["domain"] = {"cluster": {"k": 2}}
    DataDir(build_data_dir(write_config(root, cfg), root / "out"))
    assert calls == []


# -- the property: every non-empty document lands exactly once -------------------------------------
@pytest.fixture(scope="module")
def shared_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tok"
    train_bpe([t for k in VOCABS for t in make_docs(k, 20)] + ["é ∑ 🙂 \t x"] * 3, 320, path)
    return path


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    texts=st.lists(
        st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40),
        min_size=1,
        max_size=40,
    ),
    parquet=st.booleans(),
)
def test_every_document_lands_once(tmp_path_factory, shared_tokenizer, texts, parquet):
    root = tmp_path_factory.mktemp("prop")
    if parquet:
        write_parquet(root / "in.parquet", {"text": texts})
    else:
        write_jsonl(root / "in.jsonl", [{"text": t} for t in texts])
    cfg = base_config(
        tokenizer={"path": str(shared_tokenizer)}, min_sequence_tokens=1, eval_fraction=0.5
    )
    cfg["fields"] = {
        "f": {"role": "target", "inputs": [{"path": "in.parquet" if parquet else "in.jsonl"}]}
    }
    kept = [t for t in texts if t.strip()]
    try:
        out = build_data_dir(write_config(root, cfg), root / "out")
    except (
        DataError
    ) as err:  # legitimately impossible: nothing to keep, or one side of the split empty
        assert not kept or "held-out" in str(err) or "training documents" in str(err), str(err)
        assert not (root / "out").exists()
        return
    dd = DataDir(out)
    train, ev = decode_split(dd, "f/all", "train"), decode_split(dd, "f/all", "eval")
    assert Counter(train) + Counter(ev) == Counter(kept)
    assert not set(train) & set(ev)



# -- held-out size ---------------------------------------------------------------------------------
def test_default_eval_fraction_gives_every_domain_a_held_out_document_and_warns(project, caplog):
    """At the default eval_fraction (0.05), 'web/hist' (40 documents) holds out none by hash and
    'web/docs' one: the build gives each at least one (min_eval_documents: 1) and warns that
    such a held-out set is too small to score reliably."""
    from mixagent.data.writer import reliable_eval_tokens

    root, _ = project
    cfg = base_config(min_sequence_tokens=64)  # warns below 4 x 64 held-out tokens
    del cfg["eval_fraction"]
    with caplog.at_level(logging.WARNING, logger="mixagent.data.writer"):
        out = build_data_dir(write_config(root, cfg), root / "out")
    dd = DataDir(out)
    assert dd.domain("web/hist").eval_documents == 1
    assert dd.manifest.provenance["eval_topped_up"] == {"web/hist": 1}
    warned = [r.getMessage() for r in caplog.records if "too few to score" in r.getMessage()]
    small = [d for d in dd.domains if d.eval_tokens < reliable_eval_tokens(64)]
    assert {d.name for d in small} >= {"web/hist", "web/docs"}
    assert len(warned) == len(small) and all("min_eval_tokens" in m for m in warned)
    assert any("'web/hist' has only" in m and "(1 documents)" in m for m in warned)


def test_min_eval_tokens_tops_up_each_domain_deterministically(project, caplog):
    from mixagent.data.writer import split_key

    root, docs = project
    cfg = base_config(eval_fraction=0.05, min_eval_tokens=200)
    with caplog.at_level(logging.WARNING, logger="mixagent.data.writer"):
        out = build_data_dir(write_config(root, cfg), root / "out")
    assert not [r for r in caplog.records if "too few to score" in r.getMessage()]
    dd = DataDir(out)
    topped = dd.manifest.provenance["eval_topped_up"]
    assert set(topped) == {"web/hist", "web/docs"}  # math/all held out 200+ tokens by hash
    everything = {"web/hist": docs["web/hist"], "web/docs": docs["web/docs"],
                  "math/all": docs["algebra"] + docs["geometry"]}
    for name, texts in everything.items():
        d = dd.domain(name)
        assert d.eval_tokens >= 200 and d.train_tokens >= 32
        train, ev = decode_split(dd, name, "train"), decode_split(dd, name, "eval")
        assert (d.train_documents, d.eval_documents) == (len(train), len(ev))
        assert Counter(train) + Counter(ev) == Counter(texts)  # nothing lost or doubled
        # the held-out set is the documents with the smallest split keys: a per-domain fraction
        assert max(map(split_key, ev)) < min(map(split_key, train))
        # minimal: without its last (largest-key) document the held-out set would be too small
        last = max(ev, key=split_key)
        assert name not in topped or d.eval_tokens - len(dd.tokenizer(last)["input_ids"]) - 1 < 200
    shards = {p.name: p.read_bytes() for p in (out / "shards").iterdir()}
    build_data_dir(write_config(root, cfg), out, force=True)
    assert {p.name: p.read_bytes() for p in (out / "shards").iterdir()} == shards

    # a domain too small to give both held-out and training data is a clear error
    with pytest.raises(DataError, match="too small for both a held-out set of min_eval_tokens"
                                        r"=100000.*lower\s+min_eval_tokens"):
        build_data_dir(write_config(root, base_config(min_eval_tokens=100_000)), root / "big")
    assert not (root / "big").exists()



# -- killed builds ---------------------------------------------------------------------------------
def _dead_pid() -> int:
    proc = __import__("subprocess").Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_killed_build_leaves_a_temp_folder_the_next_build_removes(project, caplog):
    """A ``data build`` SIGKILLed mid-way leaves ``.out.building-...``; the next build removes it,
    but never the temporary folder of a build that is still running."""
    import signal
    import subprocess

    root, _ = project
    cfg = write_config(root, base_config())
    out = build_data_dir(cfg, root / "out")
    good = _fingerprint(out)
    code = (
        "import sys, time\n"
        "from mixagent.data import writer\n"
        "from mixagent.data.build import build_data_dir\n"
        "def finish(self, *a, **k):\n"
        "    print('finishing', flush=True)\n"
        "    time.sleep(600)\n"
        "writer.DataDirWriter.finish = finish\n"
        "build_data_dir(sys.argv[1], sys.argv[2], force=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(cfg), str(out)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "finishing"  # shards written, not yet renamed
        (running,) = [p for p in leftovers(root) if ".building-" in p]
        # a build next to a running one leaves the running one's folder alone
        build_data_dir(cfg, out, force=True)
        assert leftovers(root) == [running]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert leftovers(root) == [running]  # what the kill left behind
    with caplog.at_level(logging.WARNING, logger="mixagent.utils.io"):
        build_data_dir(cfg, out)  # up to date: reused, and still cleans up
    assert leftovers(root) == []
    assert any(running in r.getMessage() and "process gone" in r.getMessage()
               for r in caplog.records)
    assert _fingerprint(out).keys() == good.keys()
    DataDir(out)


def test_stale_temp_folders_only_of_dead_local_owners_are_removed(tmp_path, caplog):
    import socket

    from mixagent.utils.io import atomic_directory, remove_stale_temporaries

    final = tmp_path / "thing"
    host = socket.gethostname()
    dead, alive = _dead_pid(), os.getpid()
    stale = tmp_path / f".thing.building-{host}-{dead}-abc123_x"
    live = tmp_path / f".thing.building-{host}-{alive}-abc123_y"
    foreign = tmp_path / f".thing.building-some-other-host-{dead}-abc123_z"
    legacy = tmp_path / ".thing.building-k2j4h5g6"  # an older mixagent: no owner recorded
    other = tmp_path / f".other.building-{host}-{dead}-abc123_w"
    for p in (stale, live, foreign, legacy, other):
        (p / "sub").mkdir(parents=True)
    # the previous output, moved aside by a writer killed before its new output was in place:
    # put back, never deleted
    old = tmp_path / f".thing.old-{host}-{dead}-abc123_v"
    old.mkdir()
    (old / "data.txt").write_text("previous good output")
    with caplog.at_level(logging.WARNING, logger="mixagent.utils.io"):
        assert remove_stale_temporaries(final) == [stale]
    assert (final / "data.txt").read_text() == "previous good output" and not old.exists()
    assert all(p.exists() for p in (live, foreign, legacy, other))
    assert any("restored" in r.getMessage() for r in caplog.records)
    # with the output in place, a dead writer's '.old-' folder is removed
    old.mkdir()
    with atomic_directory(final, replace=True) as tmp:
        (tmp / "data.txt").write_text("new")
    assert not old.exists() and (final / "data.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (final, live, foreign, legacy, other))


# -- CLI -------------------------------------------------------------------------------------------
def test_cli_build_and_info(project):
    from typer.testing import CliRunner

    from mixagent.cli.main import app

    root, _ = project
    cfg = write_config(root, base_config())
    runner = CliRunner()
    res = runner.invoke(
        app, ["data", "build", str(cfg), "--out", str(root / "out")], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0, res.output
    assert "web/hist" in res.output and "math/all" in res.output and "content hash" in res.output
    res = runner.invoke(app, ["data", "info", str(root / "out")], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "web/docs" in res.output and "trained-bpe" in res.output
    res = runner.invoke(app, ["data", "build", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "--force" in res.output and "--out" in res.output


def test_cli_error_is_one_red_line_with_exit_2(project, monkeypatch, capsys):
    from mixagent.cli.main import main

    root, _ = project
    cfg = write_config(root, base_config(eval_fracton=0.1))
    monkeypatch.setattr(
        sys, "argv", ["mixagent", "data", "build", str(cfg), "--out", str(root / "out")]
    )
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "eval_fracton" in err and "Traceback" not in err
    assert not (root / "out").exists()
