"""Domain spaces (``domain_space:`` in env specs): the view's semantics, its errors, and envs on it.

A view's split parts must tile the underlying token stream exactly, a group must hold exactly its
members' tokens, held-out text must come only from eval shards, and the sampler must draw a
group's members in proportion to their tokens. An env with a domain space must pass the
Gymnasium checker and share the base of the same spec without one. The ``DomainSpace`` that
policies see is built from the data (manifest or view) or the resolved env, recorded in
trajectory cards and read back from them, never guessed from domain names.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from mixagent.config import validate_config
from mixagent.data.manifest import DataDir
from mixagent.data.sampler import MixtureSampler
from mixagent.data.views import DomainSpaceError, DomainView
from mixagent.envs.spec import EnvSpec, load_env_spec
from mixagent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "envs" / "micro.yaml"
# env specs (scenario families, `family:` files, are tested in tests/test_family.py)
SPECS = sorted(p for p in (ROOT / "envs").glob("*.yaml") if not p.name.startswith("family-"))
GROUPS = {"prose/all": ["prose/a", "prose/b"]}


@pytest.fixture(scope="module")
def data(synthetic_datadir: Path) -> DataDir:
    return DataDir(synthetic_datadir)


# -- view semantics --------------------------------------------------------------------------
@pytest.mark.parametrize("parts", [2, 3])
def test_split_parts_tile_the_stream(data: DataDir, parts: int) -> None:
    view = DomainView(data, split=parts)
    eos = data.manifest.tokenizer.eos_token_id
    assert view.domain_names == [f"{d}#{i}" for d in data.domain_names for i in range(1, parts + 1)]
    for d in data.domains:
        for split in ("train", "eval"):
            pieces = [view.tokens(f"{d.name}#{i}", split) for i in range(1, parts + 1)]
            assert np.array_equal(np.concatenate(pieces), data.tokens(d.name, split))
            assert all(p[-1] == eos for p in pieces)  # cuts fall on document boundaries
            assert all(isinstance(p, np.memmap) for p in pieces)  # slices, not copies
        infos = [view.domain(f"{d.name}#{i}") for i in range(1, parts + 1)]
        assert sum(i.train_tokens for i in infos) == d.train_tokens
        assert sum(i.eval_tokens for i in infos) == d.eval_tokens
        assert {i.field for i in infos} == {d.field} and {i.role for i in infos} == {d.role}
    assert view.manifest.content_hash == data.manifest.content_hash
    assert view.tokenizer_dir == data.tokenizer_dir


def test_groups_hold_exactly_their_members(data: DataDir) -> None:
    view = DomainView(data, GROUPS)
    assert view.domain_names == ["code/x", "math/y", "prose/all"]  # manifest order
    g = view.domain("prose/all")
    assert (g.field, g.role) == ("prose", "source")
    for split in ("train", "eval"):
        members = np.concatenate([data.tokens("prose/a", split), data.tokens("prose/b", split)])
        assert np.array_equal(view.tokens("prose/all", split), members)
        assert np.array_equal(view.tokens("math/y", split), data.tokens("math/y", split))
    assert g.train_tokens == data.domain("prose/a").train_tokens + data.domain("prose/b").train_tokens
    assert g.eval_tokens == data.domain("prose/a").eval_tokens + data.domain("prose/b").eval_tokens
    assert view.members("prose/all") == ["prose/a", "prose/b"]
    assert [d.name for d in view.domains_of_field("prose")] == ["prose/all"]
    assert view.describe()["groups"] == GROUPS


def test_groups_then_split_and_eval_never_train(data: DataDir) -> None:
    view = DomainView(data, GROUPS, split=2)
    train_all = np.concatenate([data.tokens("prose/a"), data.tokens("prose/b")])
    eval_all = np.concatenate([data.tokens("prose/a", "eval"), data.tokens("prose/b", "eval")])
    got_eval = np.concatenate([view.tokens("prose/all#1", "eval"), view.tokens("prose/all#2", "eval")])
    got_train = np.concatenate([view.tokens("prose/all#1"), view.tokens("prose/all#2")])
    assert np.array_equal(got_eval, eval_all) and np.array_equal(got_train, train_all)
    assert got_eval.size != got_train.size
    with pytest.raises(Exception, match="unknown domain"):
        view.tokens("prose/all")  # a split view has only the parts


def test_sampler_draws_group_members_by_tokens(data: DataDir) -> None:
    seq = 16
    view = DomainView(data, GROUPS)
    n_a = data.domain("prose/a").train_tokens
    n_b = data.domain("prose/b").train_tokens

    def member_counts() -> np.ndarray:
        s = MixtureSampler(view, seq, [1.0, 1.0], seed=3, domains=["prose/all", "math/y"])
        doms, chunks = s.next_indices(4000)
        starts = chunks[doms == 0] * seq
        in_a = starts + seq <= n_a  # chunks straddling the member boundary count for b
        return np.array([in_a.sum(), (~in_a).sum()])

    counts = member_counts()
    assert np.array_equal(counts, member_counts())  # deterministic
    share = counts[0] / counts.sum()
    assert abs(share - n_a / (n_a + n_b)) < 0.05


@pytest.mark.parametrize(("groups", "split", "key", "text"), [
    ({"prose/all": ["prose/a", "prose/zzz"]}, 1, "groups.prose/all[1]", "not a domain"),
    ({"g1": ["prose/a"], "g2": ["prose/a", "prose/b"]}, 1, "groups.g2[0]", "already in group 'g1'"),
    ({"g1": ["prose/a", "prose/a"]}, 1, "groups.g1[1]", "twice in this group"),
    ({"mixed": ["prose/a", "math/y"]}, 1, "groups.mixed", "must lie in one field"),
    ({"empty": []}, 1, "groups.empty", "at least one member"),
    ({"code/x": ["prose/a"]}, 1, "groups.code/x", "already a domain"),
    ({"a#1": ["prose/a"]}, 1, "groups.a#1", "may not contain"),
    ({}, 0, "split", "at least 1"),
])
def test_view_errors_name_the_key(data: DataDir, groups: dict, split: int, key: str, text: str) -> None:
    with pytest.raises(DomainSpaceError, match=text) as err:
        DomainView(data, groups, split)
    assert err.value.key == key


# -- env specs -------------------------------------------------------------------------------
def _spec(raw: dict, origin: str = "ds.yaml") -> EnvSpec:
    return validate_config(EnvSpec, raw, source=origin).located(origin, MICRO.parent)


def _synthetic_spec(datadir: Path, **extra: object) -> dict:
    raw = yaml.safe_load(MICRO.read_text(encoding="utf-8"))
    raw["data"] = {"path": str(datadir)}
    raw["cpt"]["seq_len"] = 16
    raw["cpt"]["tokens_per_step"] = 128
    raw.update(extra)
    return raw


@pytest.mark.parametrize(("space", "pattern"), [
    ({"groups": {"prose/all": ["prose/a", "nope"]}}, r"ds\.yaml: domain_space\.groups\.prose/all\[1\]: 'nope'"),
    ({"groups": {"bad": ["prose/a", "math/y"]}}, r"ds\.yaml: domain_space\.groups\.bad: .*one field"),
    ({"split": 0}, r"ds\.yaml: domain_space\.split: .*greater than or equal to 1"),
    ({"split": 400}, r"ds\.yaml: domain_space\.split: part '.*#\d+' has \d+ eval tokens, fewer than one sequence"),
    ({"splits": 2}, r"ds\.yaml: domain_space\.splits: unknown key"),
])
def test_spec_errors(synthetic_datadir: Path, space: dict, pattern: str) -> None:
    from mixagent.envs.setup import resolve_spec

    with pytest.raises(ConfigError, match=pattern):
        resolve_spec(_spec(_synthetic_spec(synthetic_datadir, domain_space=space)))


def test_spec_domains_select_from_the_space(synthetic_datadir: Path) -> None:
    from mixagent.envs.setup import resolve_spec

    raw = _synthetic_spec(synthetic_datadir, domain_space={"split": 2},
                          domains=["math/y#2", "prose/a#1"])
    r = resolve_spec(_spec(raw))
    assert r.domains == ["math/y#2", "prose/a#1"] and r.is_target.tolist() == [True, False]
    assert r.pretrain_domains == ["prose/a", "prose/b"]  # the underlying source domains
    with pytest.raises(ConfigError, match=r"domains\[0\]: 'prose/a' is not a domain of the spec's domain_space"):
        resolve_spec(_spec({**raw, "domains": ["prose/a", "math/y#1"]}))


def test_unset_domain_space_keeps_the_spec_dump() -> None:
    """Specs without the key dump as before, so env-spec hashes of stored trajectories hold."""
    spec = load_env_spec(MICRO)
    assert "domain_space" not in spec.model_dump()
    raw = yaml.safe_load(MICRO.read_text(encoding="utf-8"))
    assert _spec({**raw, "domain_space": {"split": 2}}).model_dump()["domain_space"] == \
        {"groups": {}, "split": 2}


# -- every shipped spec resolves without training ----------------------------------------------
@pytest.fixture(scope="module")
def small_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny data directory with the built-in ``small`` corpus's domain names the specs use."""
    from mixagent.data.tokenizer import train_bpe
    from mixagent.data.writer import DataDirWriter

    names = set()
    for path in SPECS:
        for members in (yaml.safe_load(path.read_text()).get("domain_space") or {}).get("groups", {}).values():
            names.update(members)
    names |= {"math/mpmath", "code/x"}
    root = tmp_path_factory.mktemp("small-like") / "data"
    rnd = random.Random(0)
    words = "the a of sum x y solve def return value module function".split()

    def docs(n: int) -> list[str]:
        return [" ".join(rnd.choice(words) for _ in range(rnd.randint(40, 80))) for _ in range(n)]

    info = train_bpe(docs(100), 300, root / "tokenizer")
    w = DataDirWriter(root, info, eval_fraction=0.3, min_sequence_tokens=64)
    for field, role in (("prose", "source"), ("code", "target"), ("math", "target")):
        w.add_field(field, role)
    for name in sorted(names):
        w.add_documents(name, name.split("/")[0], docs(40))
    w.add_task("math_exact_match", "math", [{"prompt": "Problem: 1+1\nAnswer:", "answer": "2"}])
    w.add_task("prose_cloze", "prose", [{"prompt": "len(obj)\n\nReturn the number of", "answer": "items"}])
    w.add_task("code_return_completion", "code", [{"prompt": "def f(x):\n    return", "answer": "x + 1"}])
    w.add_task("code_output_prediction", "code",
               [{"prompt": "    def test_f(self):\n        self.assertEqual(f(1),", "answer": "2"}])
    w.finish("small-like", "small-like-v1", {})
    return root


def test_shipped_specs_resolve_without_training(small_like: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from mixagent.envs.setup import resolve_spec

    monkeypatch.setenv("MIXAGENT_CACHE", str(tmp_path / "cache"))
    keys, sizes = {}, {}
    for path in SPECS:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        load_env_spec(path)  # the file itself is valid
        if raw["data"] != {"builtin": "small"}:
            continue
        raw["data"] = {"path": str(small_like)}
        r = resolve_spec(_spec(raw, path.name))
        keys[path.stem], sizes[path.stem] = r.base_recipe().key, r.num_domains
    assert not (tmp_path / "cache" / "bases").exists()  # resolving trains nothing
    assert {"prose-to-math-coarse", "prose-to-math-fine", "prose-to-math-wsd", "prose-to-math-large"} <= set(keys)
    base = keys["prose-to-math"]
    assert keys["prose-to-math-coarse"] == keys["prose-to-math-fine"] == keys["prose-to-math-wsd"] == base
    assert keys["prose-to-math-large"] != base
    assert keys["prose-to-math-v2"] == base  # benchmark scoring changes the measure, not the base
    assert keys["prose-to-code-v2"] == base  # the same prose base, a longer CPT
    assert keys["prose-to-code-v3"] == base  # the same prose base, another code benchmark
    assert sizes["prose-to-math-coarse"] == 6  # 3 prose groups, 2 math groups + math/mpmath
    assert sizes["prose-to-math-fine"] == 2 * sizes["prose-to-math"]


# -- envs on the micro spec --------------------------------------------------------------------
@pytest.fixture(scope="module")
def micro_cache(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("ds-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXAGENT_CACHE", str(path))
        yield path


MICRO_SPACES = {
    "split": {"split": 2},
    "groups": {"groups": {"prose/stdlib": ["prose/stdlib-core", "prose/stdlib-system"],
                          "math/problems": ["math/arithmetic-problems", "math/algebra-problems"]}},
}


@pytest.mark.parametrize("space", sorted(MICRO_SPACES))
def test_env_with_domain_space(micro_cache: Path, space: str) -> None:
    from gymnasium.utils.env_checker import check_env

    from mixagent.data.space import DomainSpace
    from mixagent.envs.proxy_env import ProxyCPTEnv
    from mixagent.envs.setup import resolve_spec
    from mixagent.proxy.base_model import bases_dir

    raw = yaml.safe_load(MICRO.read_text(encoding="utf-8"))
    plain = resolve_spec(_spec(raw, "micro.yaml"))
    spec = _spec({**raw, "domain_space": MICRO_SPACES[space]}, f"micro-{space}.yaml")
    env = ProxyCPTEnv(spec, progress=False)
    assert env.resolved.base_recipe().key == plain.base_recipe().key
    assert [p.name for p in bases_dir().iterdir() if p.is_dir()] == [plain.base_recipe().key]
    names = env.domain_names
    if space == "split":
        assert names == [f"{d}#{i}" for d in plain.domains for i in (1, 2)]
    else:
        assert "prose/stdlib" in names and "math/problems" in names and len(names) == 4
    check_env(env, skip_render_check=True)
    env.reset(seed=0)
    done, total = False, 0.0
    while not done:
        _, r, done, _, info = env.step(env.action_space.sample())
        total += r
    assert np.isfinite(total) and info["losses"].shape == (len(names),)
    ds = DomainSpace.from_env(env)
    assert ds.names == tuple(names)
    assert ds.roles == tuple("target" if t else "source" for t in env.is_target)
    assert sum(ds.train_tokens) == sum(plain.data.domain(d).train_tokens for d in plain.domains)
    env.close()


# -- DomainSpace: from the data or the env, recorded in trajectory cards, read back ----------------
def test_domain_space_from_data_and_view(data: DataDir) -> None:
    from mixagent.data.space import DomainSpace

    ds = DomainSpace.from_data(data)
    assert ds.names == tuple(data.domain_names) and ds.name == data.manifest.name
    assert ds.fields == tuple(d.field for d in data.domains)
    assert ds.roles == tuple(d.role for d in data.domains)  # the manifest's roles
    assert ds.train_tokens == tuple(d.train_tokens for d in data.domains)
    field = data.domains[0].field
    by_field = DomainSpace.from_data(data, target_field=field, name="x")
    assert by_field.roles == tuple("target" if d.field == field else "source" for d in data.domains)
    view = DomainView(data, GROUPS)
    grouped = DomainSpace.from_data(view, ["prose/all"])
    assert grouped.fields == ("prose",)
    assert grouped.train_tokens == (sum(data.domain(d).train_tokens for d in GROUPS["prose/all"]),)
    assert DomainSpace.from_dict(grouped.to_dict()) == grouped


def test_trajectory_cards_record_the_env_domain_space(micro_cache: Path, tmp_path: Path, caplog) -> None:
    """A collection records its env's space (real fields and token counts) in its card; training
    reads it back; a card from before that gets fields from its env spec, tokens unknown."""
    import json
    import logging
    import shutil

    from mixagent.data.space import DomainSpace
    from mixagent.envs.setup import resolve_spec
    from mixagent.policies.training.data import episode_mixtures, read_trajectories
    from mixagent.trajectories import collect

    out = tmp_path / "c"
    collect(env_spec=str(MICRO), out=str(out), episodes=1, progress=False)
    env_space = DomainSpace.from_env(resolve_spec(MICRO))
    assert min(env_space.train_tokens) > 0
    card = json.loads((out / "card.json").read_text(encoding="utf-8"))
    assert DomainSpace.from_dict(card["domain_space"]) == env_space
    rows, _ = read_trajectories([out])
    assert all(r["domain_space"] == env_space for r in rows)
    assert episode_mixtures(rows)[0] == [env_space]

    legacy = tmp_path / "legacy"
    shutil.copytree(out, legacy)
    del card["domain_space"]
    (legacy / "card.json").write_text(json.dumps(card), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        rows, _ = read_trajectories([legacy])
    old = rows[0]["domain_space"]
    assert "record no domain space" in caplog.text
    assert (old.names, old.fields, old.roles) == (env_space.names, env_space.fields, env_space.roles)
    assert old.train_tokens == (0,) * env_space.num_domains
