"""Scenario families: deterministic sampling, clear errors, family collections that record and
resume their scenarios exactly, and one base for all scenarios.

The family is ``envs/family-micro.yaml`` with its base pointed at the session's micro spec (the
built tiny corpus by path; same hashes as ``envs/micro.yaml``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mixagent.errors import ConfigError
from mixagent.trajectories import collect, load
from mixagent.trajectories.schema import DETERMINISTIC_COLUMNS
from mixagent.trajectories.storage import TrajectoryError

pytestmark = pytest.mark.usefixtures("micro_cache_env")

FAMILY_MICRO = Path(__file__).resolve().parents[1] / "envs" / "family-micro.yaml"
FAMILY_V1 = Path(__file__).resolve().parents[1] / "envs" / "family-v1.yaml"
FAMILY_V2 = Path(__file__).resolve().parents[1] / "envs" / "family-v2.yaml"
FAMILY_MICRO_V2 = Path(__file__).resolve().parents[1] / "envs" / "family-micro-v2.yaml"


def _family_dict(micro_spec: Path) -> dict[str, Any]:
    d = yaml.safe_load(FAMILY_MICRO.read_text(encoding="utf-8"))
    d["family"]["base"] = str(micro_spec)
    return d


def _write(folder: Path, d: dict[str, Any], name: str = "family.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(d), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def family_file(micro_spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("family"), _family_dict(micro_spec))


def _rows(folder: Path):
    df = load(folder).to_pandas()
    return df[list(DETERMINISTIC_COLUMNS)].sort_values(["episode", "t", "branch_id"]).reset_index(drop=True)


# -- sampling --------------------------------------------------------------------------------------
def test_sampling_is_deterministic_covers_the_choices_and_shares_the_base(family_file: Path):
    from mixagent.envs.family import load_family
    from mixagent.envs.setup import resolve_spec

    fam = load_family(family_file)
    again = load_family(family_file)
    seen: dict[str, set[Any]] = {k: set() for k in ("target", "split", "lr", "num_steps",
                                                     "tokens", "aggregator", "grouped", "subset")}
    base_keys, ids = set(), set()
    for i in range(48):
        spec = fam.sample(3, i)
        assert spec.model_dump() == again.sample(3, i).model_dump()  # pure: same (seed, index)
        assert spec.source_field == "prose"  # the source field never varies
        seen["target"].add(spec.target_field)
        seen["split"].add(spec.domain_space.split if spec.domain_space else 1)
        seen["lr"].add(spec.cpt.lr.schedule)
        seen["num_steps"].add(spec.cpt.num_steps)
        seen["tokens"].add(spec.cpt.tokens_per_step)
        seen["aggregator"].add(spec.reward.aggregator)
        seen["grouped"].add(bool(spec.domain_space and spec.domain_space.groups))
        resolved = resolve_spec(spec)  # every sample is a valid scenario on the data
        choices = fam.scenario(3, i).choices
        seen["subset"].add(choices["source_domains"]["kept"] < choices["source_domains"]["of"])
        assert all(d.split("/")[0] in ("prose", spec.target_field) for d in resolved.domains)
        base_keys.add(resolved.base_recipe().key)
        ids.add(fam.scenario(3, i).id)
    assert seen["target"] == {"math", "code"} and seen["split"] == {1, 2}
    assert seen["lr"] == {"cosine", "wsd", "constant"} and seen["num_steps"] == {2, 3}
    assert seen["tokens"] == {256, 512} and seen["aggregator"] == {"mean", "weighted"}
    assert seen["grouped"] == {True, False} and seen["subset"] == {True, False}
    assert len(base_keys) == 1  # no varied key is part of the base's cache key
    assert len(ids) > 10
    # another collection seed gives other scenarios
    assert [fam.scenario(4, i).id for i in range(8)] != [fam.scenario(3, i).id for i in range(8)]


def test_shipped_families_load(micro_spec: Path):
    from mixagent.config import load_yaml_config
    from mixagent.envs.family import FamilyFile, is_family_file

    assert is_family_file(FAMILY_V1) and is_family_file(FAMILY_MICRO)
    assert not is_family_file(micro_spec)
    fam = load_yaml_config(FamilyFile, FAMILY_V1).family  # types only: v1 needs the small corpus
    assert {t.field for t in fam.targets} == {"math", "code"}
    assert {lr.schedule for lr in fam.cpt.lr or []} == {"cosine", "wsd", "constant"}
    # v2: benchmark-scored; each target scores the source benchmark too (eval_tasks replace
    # the base's benchmarks), and its weightings are with and without a domain-loss term
    for path in (FAMILY_V2, FAMILY_MICRO_V2):
        assert is_family_file(path)
        fam = load_yaml_config(FamilyFile, path).family
        assert {t.field for t in fam.targets} == {"math", "code"}
        assert {lr.schedule for lr in fam.cpt.lr or []} == {"cosine", "wsd", "constant"}
        for t in fam.targets:
            assert "prose_cloze" in {task.name for task in t.eval_tasks or []}
            assert {"loss" in terms for terms in t.target_terms or []} == {True, False}
            assert all(any(k.endswith(".answer_logprob") for k in terms)
                       for terms in t.target_terms or [])


def test_repeats_share_a_scenario_and_change_nothing_at_one(family_file: Path, tmp_path: Path):
    """`repeats: r` runs scenario i in episodes r*i .. r*i+r-1; at 1 (the default) the family's
    hash and scenarios are those of a family without the key, so old collections resume. The
    shipped paired family is family-v2 with repeats, nothing else."""
    from mixagent.envs.family import load_family

    d = yaml.safe_load(family_file.read_text(encoding="utf-8"))
    one = load_family(family_file)
    d["family"]["repeats"] = 1
    explicit = load_family(_write(tmp_path / "one", d))
    assert explicit.semantic_dump() == one.semantic_dump()
    assert [explicit.scenario(3, i).id for i in range(6)] == [one.scenario(3, i).id for i in range(6)]
    d["family"]["repeats"] = 3
    three = load_family(_write(tmp_path / "three", d))
    assert three.semantic_dump() != one.semantic_dump()
    ids = [three.scenario(3, i).id for i in range(9)]
    assert ids[0:3] == [ids[0]] * 3 and ids[3:6] == [ids[3]] * 3 and len(set(ids)) == 3
    assert three.scenario(3, 4).spec.model_dump() == one.scenario(3, 1).spec.model_dump()
    paired = yaml.safe_load((FAMILY_V2.parent / "family-v2-paired.yaml").read_text(encoding="utf-8"))
    v2 = yaml.safe_load(FAMILY_V2.read_text(encoding="utf-8"))
    crn = yaml.safe_load((FAMILY_V2.parent / "family-v2-crn.yaml").read_text(encoding="utf-8"))
    assert paired["family"].pop("repeats") == 4 == crn["family"].pop("repeats")
    assert crn["family"].pop("repeat_seeds") == "shared"
    v3 = yaml.safe_load((FAMILY_V2.parent / "family-v3-crn.yaml").read_text(encoding="utf-8"))
    assert v3["family"].pop("observation")["features"] == ["benchmark_scores", "alignment", "objective"]
    assert v3["family"].pop("repeats") == 4 and v3["family"].pop("repeat_seeds") == "shared"
    for key in ("name", "description"):
        paired["family"].pop(key), v2["family"].pop(key), crn["family"].pop(key), v3["family"].pop(key)
    assert paired == v2 == crn == v3


def test_shared_repeat_seeds_give_a_scenarios_repeats_one_data_order(family_file: Path,
                                                                      tmp_path: Path):
    """`repeat_seeds: shared`: a scenario's repeats run on the first repeat's env seed (common
    random numbers), with their own explorer seeds; the family hash changes, and at `own` (the
    default) nothing does. With `explorer_order: cycle` episode i runs the (i mod n)-th explorer,
    and two repeats that mix alike give identical rows."""
    from mixagent.envs.family import load_family
    from mixagent.policies.policy_explorers import make_explorer

    d = yaml.safe_load(family_file.read_text(encoding="utf-8"))
    d["family"]["repeats"] = 3
    own = load_family(_write(tmp_path / "own", d))
    d["family"]["repeat_seeds"] = "own"
    assert load_family(_write(tmp_path / "own2", d)).semantic_dump() == own.semantic_dump()
    d["family"]["repeat_seeds"] = "shared"
    shared_file = _write(tmp_path / "shared", d)
    shared = load_family(shared_file)
    assert shared.semantic_dump() != own.semantic_dump()
    assert [shared.env_seed_index(i) for i in range(5)] == [0, 0, 0, 3, 3]
    assert [own.env_seed_index(i) for i in range(5)] == [0, 1, 2, 3, 4]

    out = tmp_path / "col"
    explorers = ["baseline:uniform", "baseline:fixed_ratio?source=0.3"]
    collect(env_spec=str(shared_file), out=str(out), episodes=6, seed=5, progress=False,
            explorers=explorers, explorer_order="cycle", explorer_factory=make_explorer)
    df = load(out).to_pandas().sort_values(["episode", "t"])
    ep = df.groupby("episode").agg(env_seed=("env_seed", "first"), scenario=("scenario", "first"),
                                   explorer_seed=("explorer_seed", "first"),
                                   explorer=("explorer", "first"))
    assert list(ep.explorer) == explorers * 3
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "repeat_seeds: shared" in readme and "explorer-order cycle" in readme
    assert ep.env_seed[0] == ep.env_seed[1] == ep.env_seed[2] != ep.env_seed[3] == ep.env_seed[5]
    assert ep.scenario[0] == ep.scenario[2] and ep.explorer_seed[0] != ep.explorer_seed[2]
    first, third = (df[df.episode == e] for e in (0, 2))
    np.testing.assert_array_equal(np.stack(first.losses), np.stack(third.losses))
    np.testing.assert_array_equal(first.balanced_score.to_numpy(), third.balanced_score.to_numpy())
    # the order is part of the collection's identity; the default leaves old hashes alone
    with pytest.raises(TrajectoryError, match="different collection"):
        collect(env_spec=str(shared_file), out=str(out), episodes=6, seed=5, progress=False,
                explorers=explorers, resume=True, explorer_factory=make_explorer)


# -- errors ----------------------------------------------------------------------------------------
def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    for key in path:
        d = d[int(key)] if isinstance(d, list) else d[key]
    if isinstance(d, list):
        d[int(last)] = value
    else:
        d[last] = value


@pytest.mark.parametrize("key, value, message", [
    ("family.cpt.num_step", [2], r"family\.cpt\.num_step: unknown key"),
    ("family.targets.0.field", "history", r"family\.targets\[0\]\.field: unknown field 'history'"),
    ("family.targets.1.field", "prose", r"family\.targets\[1\]\.field: 'prose' is the source field"),
    ("family.targets.0.target_terms.1", {"nope.exact_match": 1.0},
     r"family\.targets\[0\]\.target_terms\[1\].*reward\.target_terms\.nope\.exact_match"),
    ("family.cpt.tokens_per_step", [256, 300], r"family\.cpt\.tokens_per_step\[1\].*multiple"),
    ("family.domains.keep", [0.8, 0.2], r"family\.domains.*keep: need 0 < low <= high <= 1"),
    ("family.domains.min_domains", 5, r"family\.domains\.min_domains: 5"),
    ("family.cpt.lr.0.schedule", "linear", r"family\.cpt\.lr\.0\.schedule"),
    ("family.targets", [], r"family\.targets: List should have at least 1 item"),
    ("family.base", "nowhere.yaml", r"family\.base: env spec not found"),
])
def test_invalid_families_name_the_key(micro_spec: Path, tmp_path: Path, key: str, value: Any,
                                       message: str):
    from mixagent.envs.family import load_family

    d = _family_dict(micro_spec)
    _set(d, key, value)
    path = _write(tmp_path, d)
    with pytest.raises(ConfigError, match=message):
        load_family(path)


def test_family_base_may_not_set_the_domain_space(micro_spec: Path, tmp_path: Path):
    from mixagent.envs.family import load_family

    d = _family_dict(micro_spec)
    base = yaml.safe_load(micro_spec.read_text(encoding="utf-8"))
    base["domain_space"] = {"split": 2}
    d["family"]["base"] = base  # inline
    with pytest.raises(ConfigError, match=r"family\.base: domain_space and domains are chosen"):
        load_family(_write(tmp_path, d))


# -- collection ------------------------------------------------------------------------------------
def test_family_collection_records_scenarios_and_resumes_exactly(family_file: Path, tmp_path: Path):
    from mixagent.envs.family import load_family
    from mixagent.envs.setup import resolve_spec
    from mixagent.trajectories.identity import family_hash, resolved_spec_hash

    full, part = tmp_path / "full", tmp_path / "part"
    cfg = {"seed": 2, "progress": False}
    collect(env_spec=str(family_file), out=str(full), episodes=3, **cfg)
    collect(env_spec=str(family_file), out=str(part), episodes=2, **cfg)  # "killed" after two
    shards = part / "shards"
    (shards / ".episode-000002.parquet.x1y2.tmp").write_bytes(b"PAR1 half a write")
    victim = shards / "episode-000001.parquet"
    victim.write_bytes(victim.read_bytes()[:200])  # truncated shard
    r = collect(env_spec=str(family_file), out=str(part), episodes=3, resume=True, **cfg)
    assert r.skipped == [0] and r.collected == [1, 2]
    ra, rb = _rows(full), _rows(part)
    assert len(ra) == len(rb) > 0
    for col in DETERMINISTIC_COLUMNS:
        assert ra[col].map(repr).tolist() == rb[col].map(repr).tolist(), col

    fam = load_family(family_file)
    coll = json.loads((part / "collection.json").read_text())
    base = resolve_spec(fam.base)
    assert coll["env_spec_hash"] == family_hash(fam, base.data.manifest)
    assert coll["scenario_family"] is True
    card = json.loads((part / "card.json").read_text())
    assert card["scenario_family"] and card["env_spec"]["name"] == "family-micro"
    assert "spec" not in card["env_spec"] and "domain_space" not in card
    per_episode = rb.groupby("episode")[["scenario", "env_spec_hash"]].first()
    for ep, row in per_episode.iterrows():
        scenario = fam.scenario(2, int(ep))  # the row's scenario is (seed, episode)'s
        assert row.scenario == scenario.id
        assert row.env_spec_hash == resolved_spec_hash(resolve_spec(scenario.spec))
        entry = card["scenarios"][row.scenario]
        assert int(ep) in entry["episodes"] and entry["env_spec_hash"] == row.env_spec_hash
        assert entry["spec"] == scenario.spec.model_dump(mode="json")
        names = rb[rb.episode == ep].domain_names.iloc[0]
        assert list(names) == entry["domain_names"] == entry["domain_space"]["names"]
        k = len(names)
        assert entry["observation_layout"]["size"] == len(rb[rb.episode == ep].obs.iloc[0])
        assert entry["observation_layout"]["domains"]["shape"][0] == k
        t = rb[rb.episode == ep].t
        assert t.max() + 1 == entry["spec"]["cpt"]["num_steps"]
    assert sorted(e for v in card["scenarios"].values() for e in v["episodes"]) == [0, 1, 2]

    # a changed family is another collection: resume refuses it
    d = yaml.safe_load(family_file.read_text(encoding="utf-8"))
    d["family"]["cpt"]["num_steps"] = [2]
    changed = _write(tmp_path / "changed", d)
    with pytest.raises(TrajectoryError, match=r"holds a different collection.*env_spec_hash"):
        collect(env_spec=str(changed), out=str(part), episodes=3, resume=True, **cfg)


def test_collections_of_different_families_load_as_one_set_of_scenarios(
        family_file: Path, micro_spec: Path, tmp_path: Path):
    """A family collected plainly and again with `repeats` (different family hashes) train one
    agent together: every row keeps its own scenario, the repeated scenario groups only its own
    episodes, and held-out selection learns of both families. A plain collection beside a family,
    or a hash asked for, is still refused."""
    from mixagent.policies.features import FeatureSpec
    from mixagent.policies.training.data import read_trajectories, transitions_from_rows
    from mixagent.policies.training.offline import _repeated_scenarios

    d = yaml.safe_load(family_file.read_text(encoding="utf-8"))
    d["family"]["repeats"] = 2
    paired = _write(tmp_path / "paired-family", d)
    plain, rep, spec = tmp_path / "plain", tmp_path / "rep", tmp_path / "spec"
    collect(env_spec=str(family_file), out=str(plain), episodes=1, seed=2, progress=False)
    collect(env_spec=str(paired), out=str(rep), episodes=2, seed=3, progress=False)
    hashes = [json.loads((c / "collection.json").read_text())["env_spec_hash"] for c in (plain, rep)]
    assert hashes[0] != hashes[1]

    both = load([plain, rep]).to_pandas()
    assert sorted(both.groupby("eps_id").scenario.first().value_counts().tolist()) == [1, 2]
    rows, meta = read_trajectories([plain, rep])
    assert [f["seed"] for f in meta["families"]] == [2, 3]
    assert [len(f["scenario_ids"]) for f in meta["families"]] == [1, 1]
    data = transitions_from_rows(rows, FeatureSpec(), meta["action_scale"], meta["action_floor"])
    groups = _repeated_scenarios(data, np.arange(len(data.episodes)))
    assert len(groups) == 1 and len(groups[0]) == 2
    assert {data.episodes[i].split("-")[0] for i in groups[0]} == {
        json.loads((rep / "collection.json").read_text())["collection_id"]}

    collect(env_spec=str(micro_spec), out=str(spec), episodes=1, seed=0, progress=False)
    with pytest.raises(TrajectoryError, match="allow_foreign"):
        load([plain, spec])
    with pytest.raises(TrajectoryError, match="allow_foreign"):
        load([plain, rep], env_spec_hash=hashes[0])


def test_scenarios_share_one_base_and_reuse_environments(micro_spec: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    """Scenarios that differ only in target field, domains, budget, schedule or reward pre-train
    the base once (a fresh base cache: one entry, one pre-training), and a worker builds one
    environment per scenario, reusing it for that scenario's later episodes."""
    import mixagent.proxy.base_model as base_model
    from mixagent.envs.family import load_family
    from mixagent.envs.proxy_env import ProxyCPTEnv

    cache = tmp_path / "cache"
    monkeypatch.setenv("MIXAGENT_CACHE", str(cache))
    pretrainings: list[str] = []
    real_pretrain = base_model.pretrain_base

    def counting_pretrain(recipe: Any, *a: Any, **kw: Any) -> Any:
        pretrainings.append(recipe.key)
        return real_pretrain(recipe, *a, **kw)

    monkeypatch.setattr(base_model, "pretrain_base", counting_pretrain)
    built: list[str] = []
    real_init = ProxyCPTEnv.__init__

    def counting_init(self: Any, spec: Any, **kw: Any) -> None:
        built.append(getattr(spec, "name", str(spec)))
        real_init(self, spec, **kw)

    monkeypatch.setattr(ProxyCPTEnv, "__init__", counting_init)
    # two scenarios (target math or code), everything else as in the micro spec
    d = _family_dict(micro_spec)
    fam = d["family"]
    fam.update({"domains": {}, "cpt": {}, "reward": {}})
    for t in fam["targets"]:
        t["target_terms"] = [{"loss": 1.0}]
    path = _write(tmp_path, d)
    out = tmp_path / "c"
    collect(env_spec=str(path), out=str(out), episodes=5, seed=0, progress=False, env_cache=2)
    scenarios = [load_family(path).scenario(0, i).id for i in range(5)]
    assert len(set(scenarios)) == 2, scenarios  # math and code both drawn in 5 episodes
    assert len(pretrainings) == 1
    assert [p.name for p in (cache / "bases").iterdir() if not p.name.startswith(".")] == \
        pretrainings
    assert sorted(built) == sorted(set(scenarios))  # one environment per scenario, reused
    assert sorted(load(out).to_pandas().groupby("episode").scenario.first()) == sorted(scenarios)


def test_schema_version_1_shards_still_load(micro_spec: Path, tmp_path: Path):
    """Collections written before the scenario column (schema 1) load with ``scenario = ''``."""
    import pyarrow.parquet as pq

    from mixagent.trajectories.schema import SCHEMA_TAG_V1
    from mixagent.trajectories.storage import read_shard

    out = tmp_path / "c"
    collect(env_spec=str(micro_spec), out=str(out), episodes=1, seed=0, progress=False)
    shard = out / "shards" / "episode-000000.parquet"
    table = pq.read_table(shard)
    meta = dict(table.schema.metadata)
    meta[b"mixagent.schema"] = SCHEMA_TAG_V1.encode()
    old = table.drop_columns(["scenario"]).replace_schema_metadata(meta)
    pq.write_table(old, shard)
    back = read_shard(shard)
    assert back.column_names == table.column_names
    assert set(back["scenario"].to_pylist()) == {""}
    assert back.drop_columns(["scenario"]).equals(table.drop_columns(["scenario"]))
    assert read_shard(shard, columns=["episode", "scenario"]).column_names == ["episode", "scenario"]


def test_cli_collects_a_family_on_ray_workers_like_in_process(family_file: Path, tmp_path: Path):
    """``mixagent collect FAMILY --workers 2`` (Ray actors sample their scenarios themselves,
    with branching) gives the rows an in-process collection gives; ``info`` names the family."""
    from typer.testing import CliRunner

    from mixagent.cli.main import app

    here, there = tmp_path / "here", tmp_path / "ray"
    collect(env_spec=str(family_file), out=str(here), episodes=2, seed=5, progress=False,
            branch={"k": 2, "batched": "off"})
    runner = CliRunner()
    res = runner.invoke(app, ["collect", str(family_file), "--out", str(there), "--episodes", "2",
                              "--seed", "5", "--workers", "2", "--branch", "2",
                              "--branch-batched", "off", "--no-progress"])
    assert res.exit_code == 0, res.output
    ra, rb = _rows(here), _rows(there)
    assert len(ra) == len(rb) > 0
    for col in DETERMINISTIC_COLUMNS:
        assert ra[col].map(repr).tolist() == rb[col].map(repr).tolist(), col
    res = runner.invoke(app, ["trajectories", "info", str(there)])
    assert res.exit_code == 0, res.output
    assert "scenario family" in res.output and "family-micro" in res.output


def test_compare_pairs_explorers_on_common_random_numbers(family_file: Path, tmp_path: Path):
    """``trajectories compare``: on a shared-seed family collected in cycle order, each
    explorer's paired difference is its final balanced score minus the baseline's on the same
    scenario and seed — checked by hand from the rows — overall and per scenario choice; pairing
    by seed finds nothing on repeats with their own seeds (a clear error), by scenario does."""
    from typer.testing import CliRunner

    from mixagent.cli.main import app
    from mixagent.errors import MixagentError
    from mixagent.evaluation.explorer_pairs import compare_explorers, episode_finals
    from mixagent.policies.policy_explorers import make_explorer

    d = yaml.safe_load(family_file.read_text(encoding="utf-8"))
    d["family"]["repeats"] = 3
    d["family"]["repeat_seeds"] = "shared"
    explorers = ["baseline:uniform", "baseline:fixed_ratio?source=0.3", "baseline:fixed_ratio?source=0.8"]
    out = tmp_path / "col"
    collect(env_spec=str(_write(tmp_path / "shared", d)), out=str(out), episodes=9, seed=5,
            progress=False, explorers=explorers, explorer_order="cycle", explorer_factory=make_explorer)
    df = load(out).to_pandas()
    final = df[df.terminateds & df.is_continuation].set_index("episode").sort_index()
    finals, choices = episode_finals(out)
    assert len(finals) == 9 and set(choices) == set(final.scenario)
    rows = compare_explorers(finals, explorers[0], by="num_steps", choices=choices)
    overall = {r.explorer: r for r in rows if r.group == "all"}
    assert set(overall) == set(explorers[1:])
    for k, name in enumerate(explorers[1:], start=1):
        diffs = [final.balanced_score[3 * s + k] - final.balanced_score[3 * s] for s in range(3)]
        r = overall[name]
        assert r.units == 3 and r.paired.diff.mean == pytest.approx(np.mean(diffs))
        assert r.paired.wins == sum(x > 0 for x in diffs)
        assert r.mean == pytest.approx(final.balanced_score[[3 * s + k for s in range(3)]].mean())
        by_steps = [x for x in rows if x.explorer == name and x.group != "all"]
        assert sum(x.units for x in by_steps) == 3
        assert {x.group for x in by_steps} == {str(choices[s]["num_steps"]) for s in set(final.scenario)}
    with pytest.raises(MixagentError, match="ran no episode"):
        compare_explorers(finals, "baseline:nope")

    d["family"]["repeat_seeds"] = "own"
    own = tmp_path / "own"
    collect(env_spec=str(_write(tmp_path / "own-spec", d)), out=str(own), episodes=6, seed=5,
            progress=False, explorers=explorers[:2], explorer_order="cycle", explorer_factory=make_explorer)
    own_finals, _ = episode_finals(own)
    with pytest.raises(MixagentError, match="repeat_seeds: shared"):
        compare_explorers(own_finals, explorers[0])
    assert compare_explorers(own_finals, explorers[0], pair_by="scenario")[0].units == 2

    runner = CliRunner()
    res = runner.invoke(app, ["trajectories", "compare", str(out), "--by", "num_steps",
                              "--json", str(tmp_path / "cmp.json")])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # the title wraps with a long tmp path
    assert "baseline:fixed_ratio?source=0.8" in text and "paired by seed" in text
    saved = json.loads((tmp_path / "cmp.json").read_text(encoding="utf-8"))
    assert saved["baseline"] == explorers[0] and len(saved["rows"]) == len(rows)
    res = runner.invoke(app, ["trajectories", "compare", str(own)])
    assert res.exit_code != 0 and "nothing to pair" in res.output


def test_a_family_may_set_what_its_scenarios_observe(family_file: Path, tmp_path: Path):
    """``observation`` replaces the base's in every scenario (and enters the family's identity);
    unset, the family is what it was: same dump, same scenarios."""
    from mixagent.envs.family import load_family

    plain = load_family(family_file)
    assert "observation" not in plain.semantic_dump()
    d = yaml.safe_load(family_file.read_text(encoding="utf-8"))
    d["family"]["observation"] = {"loss_max": 20.0, "score_max": 2.0, "features": ["objective"]}
    fam = load_family(_write(tmp_path / "objective", d))
    assert fam.semantic_dump() != plain.semantic_dump()
    for i in range(4):
        spec, before = fam.sample(3, i), plain.sample(3, i)
        assert spec.observation.features == ["objective"] and spec.observation.score_max == 2.0
        same = {"observation", "name"}  # a scenario is named by a hash of its spec
        assert spec.model_dump(exclude=same) == before.model_dump(exclude=same)
    d["family"]["observation"] = {"features": ["objectives"]}
    with pytest.raises(ConfigError, match="observation"):
        load_family(_write(tmp_path / "bad", d))
