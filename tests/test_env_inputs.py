"""Bad inputs a user or a fault probe gives the environment and its config files.

* YAML: a key repeated in one mapping (any depth, any config file) is an error, not last-wins.
* Weights and actions: huge finite weights normalise; inf, NaN, negative, repeated keys,
  strings, complex numbers and booleans are rejected with an ``InvalidActionError`` /
  ``ConfigError`` that says what was given; ``env run`` says when it rescales or spreads shares.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mixagent.envs.actions import action_from_weights, check_action, check_weights
from mixagent.envs.errors import InvalidActionError
from mixagent.envs.weights import parse_weights, parse_weights_explained
from mixagent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "envs" / "micro.yaml"

DOMAINS = ["prose/a", "prose/b", "math/x"]


def field_of(domain: str) -> str:
    return domain.split("/")[0]


# -- YAML: duplicate keys ---------------------------------------------------------------------
def test_load_yaml_rejects_a_repeated_key_at_any_depth(tmp_path):
    from mixagent.config import load_yaml

    cases = {
        "top": ("a: 1\nb: 2\na: 3\n", "'a'", (1, 3)),
        "nested": ("top:\n  inner:\n    k: 1\n    j: 2\n    k: 3\n", "'top.inner.k'", (3, 5)),
        "in a list": ("xs:\n  - {name: a, name: b}\n", "'xs[0].name'", (2, 2)),
    }
    for name, (text, key, (first, second)) in cases.items():
        path = tmp_path / f"{name.replace(' ', '-')}.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            load_yaml(path)
        msg = str(info.value)
        assert str(path) in msg and key in msg and f"lines {first} and {second}" in msg, msg


def test_load_yaml_reads_valid_files_like_safe_load(tmp_path):
    from mixagent.config import load_yaml

    for spec in sorted((ROOT / "envs").glob("*.yaml")):
        assert load_yaml(spec) == yaml.safe_load(spec.read_text(encoding="utf-8")), spec
    merged = tmp_path / "merge.yaml"  # an explicit key overriding a merged one is no duplicate
    merged.write_text("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  x: 3\n", encoding="utf-8")
    assert load_yaml(merged) == {"base": {"x": 1, "y": 2}, "use": {"x": 3, "y": 2}}
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_yaml(bad)


def test_data_build_config_with_two_math_fields_is_an_error(tmp_path):
    from mixagent.data.build import load_build_config

    path = tmp_path / "corpus.yaml"
    path.write_text(
        "name: c\n"
        "fields:\n"
        "  math:\n"
        "    role: target\n"
        "    inputs: [{path: a.jsonl, domain: {constant: a}}]\n"
        "  web:\n"
        "    role: source\n"
        "    inputs: [{path: w.jsonl, domain: {constant: w}}]\n"
        "  math:\n"
        "    role: target\n"
        "    inputs: [{path: b.jsonl, domain: {constant: b}}]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"corpus\.yaml: key 'fields\.math' is given twice "
                                          r"\(lines 3 and 9\)"):
        load_build_config(path)


def test_env_spec_with_two_cpt_blocks_is_an_error(tmp_path):
    from mixagent.envs.spec import load_env_spec

    text = MICRO.read_text(encoding="utf-8")
    first = next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("cpt:"))
    n = len(text.splitlines())
    path = tmp_path / "spec.yaml"
    path.write_text(text + "cpt:\n  num_steps: 5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"spec\.yaml: key 'cpt' is given twice "
                                          rf"\(lines {first} and {n + 1}\)"):
        load_env_spec(path)


def test_evaluate_and_train_configs_reject_repeated_keys(tmp_path):
    from mixagent.cli.policies import _yaml_overrides
    from mixagent.evaluation.config import load_evaluate_config

    path = tmp_path / "eval.yaml"
    path.write_text("envs: [a.yaml]\npolicies: [baseline:uniform]\nout: x\nseeds: [1]\n"
                    "seeds: [2]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"eval\.yaml: key 'seeds' is given twice"):
        load_evaluate_config(path, {})
    path = tmp_path / "hp.yaml"
    path.write_text("network:\n  hidden: 64\n  hidden: 128\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"hp\.yaml: key 'network\.hidden' is given twice"):
        _yaml_overrides(path)


# -- --weights text ----------------------------------------------------------------------------
def test_parse_weights_normalises_huge_finite_shares():
    assert np.allclose(parse_weights("1e308,1e308,1e308", DOMAINS, field_of), 1 / 3)
    assert np.allclose(parse_weights("prose=1e308,math=1e308", DOMAINS, field_of),
                       [0.25, 0.25, 0.5])
    assert np.allclose(parse_weights("1e308,0,1e-300", DOMAINS, field_of), [1, 0, 0])


def test_parse_weights_rejects_inf_nan_negative_and_repeated_keys():
    for bad, msg in (("1e309,1,1", r"'1e309' reads as inf; a share must be a finite "
                                   r"non-negative number"),
                     ("prose=nan", "finite non-negative"), ("1,-1,1", "finite non-negative"),
                     ("prose=0.3,prose=0.7", r"'prose' is given twice; give each field or "
                                             r"domain once"),
                     ("math/x=0.1,math/x=0.1", "'math/x' is given twice"),
                     ("prose=0.3,prose/a=0.2", "gets a share from both 'prose' and 'prose/a'")):
        with pytest.raises(ConfigError, match=rf"--weights: .*{msg}"):
            parse_weights(bad, DOMAINS, field_of, where="--weights")


def test_parse_weights_explained_says_when_shares_are_rescaled_or_spread():
    w, notes = parse_weights_explained("prose=0.3,math=0.3", DOMAINS, field_of)
    assert np.allclose(w, [0.25, 0.25, 0.5])
    assert "prose=0.3 spread over its 2 domains: 0.15 each" in notes
    assert "the given shares sum to 0.6, not 1; rescaled to sum to 1" in notes
    _, notes = parse_weights_explained("prose=0.4,math=0.6", DOMAINS, field_of)
    assert not any("rescaled" in n for n in notes)
    _, notes = parse_weights_explained("math/x=1", DOMAINS, field_of)
    assert notes == ["2 domains not named get weight 0: prose/a, prose/b"]
    assert parse_weights_explained("uniform", DOMAINS, field_of)[1] == []


# -- weight vectors and actions ----------------------------------------------------------------
def test_check_weights_scales_by_the_max_before_summing():
    assert np.allclose(check_weights([1e308] * 3, 3), 1 / 3)
    assert np.allclose(check_weights(np.array([1e308, 1e308, 0.0]), 3), [0.5, 0.5, 0])
    assert np.allclose(action_from_weights([1e308] * 3, 3.0, 0.0), 0.0)


BAD_VECTORS = {
    "complex": ([0.5 + 1j, 0.5, 0.5], r"complex numbers .*imaginary part"),
    "numeric strings": (["0.5", "0.3", "0.2"], r"got text .*'0\.5'.*pass numbers, not strings"),
    "a string": ("0.5", "got the text '0.5'"),
    "booleans": ([True, False, True], "real numbers .* got list"),
    "None inside": ([0.5, None, 0.5], r"real numbers .* got list \[0\.5, None, 0\.5\]"),
    "inf": ([np.inf, 1.0, 1.0], r"inf at positions \[0\]"),
    "NaN": ([1.0, np.nan, 1.0], r"NaN at positions \[1\]"),
    "shape": ([1.0, 1.0], r"shape \(2,\), expected \(3,\)"),
}


@pytest.mark.parametrize("case", list(BAD_VECTORS))
def test_actions_and_weights_must_be_real_numbers(case):
    values, msg = BAD_VECTORS[case]
    with pytest.raises(InvalidActionError, match=msg):
        check_action(values, 3)
    with pytest.raises(InvalidActionError, match=msg):
        check_weights(values, 3)


def test_check_weights_rejects_negative_and_all_zero():
    with pytest.raises(InvalidActionError, match=r"non-negative; negative at positions \[1\]"):
        check_weights([1.0, -0.5, 1.0], 3)
    with pytest.raises(InvalidActionError, match="all zero"):
        check_weights([0, 0, 0], 3)
    # exact fractions and numpy scalars are real numbers too
    from fractions import Fraction

    assert np.allclose(check_weights([Fraction(1, 4), np.float32(0.25), 2], 3), [0.1, 0.1, 0.8])


# -- the environment -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(cache: Path):
    from mixagent.envs.proxy_env import ProxyCPTEnv

    e = ProxyCPTEnv(MICRO, progress=False)
    yield e
    e.close()


def test_step_weights_huge_finite_weights_run(env):
    env.reset(seed=0)
    k = env.num_domains
    _, _, _, _, info = env.step_weights([1e308] * k)
    assert np.allclose(info["weights"], 1.0 / k)


def test_step_weights_raises_the_envs_invalid_action_error(env):
    k = env.num_domains
    for bad in ([0.0] * k, [-1.0] + [1.0] * (k - 1), [np.nan] * k, ["0.1"] * k,
                [0.1 + 1j] * k, [1.0] * (k + 1)):
        env.reset(seed=0)
        with pytest.raises(InvalidActionError) as info:
            env.step_weights(bad)
        assert type(info.value) is InvalidActionError, bad  # not the data layer's DataError


def test_step_rejects_complex_and_numeric_strings(env):
    k = env.num_domains
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=r"action must be .* real numbers .* complex"):
        env.step(np.full(k, 0.1 + 1j))
    with pytest.raises(InvalidActionError, match=r"action must be .* real numbers .* text"):
        env.step(["0.1"] * k)
    with pytest.raises(InvalidActionError, match="real numbers"):
        env.step(np.ones(k, dtype=bool))
    env.step(np.zeros(k, np.float32))  # the env is still usable after rejected actions


def test_env_run_says_when_it_rescales_and_spreads(env, monkeypatch, capsys):
    from mixagent.cli.main import main

    fields = list(dict.fromkeys(env.resolved.field_of(d) for d in env.domain_names))
    source, target = fields[0], fields[-1]
    n = sum(env.resolved.field_of(d) == source for d in env.domain_names)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["mixagent", "env", "run", str(MICRO), "--weights",
                                      f"{source}=0.3,{target}=0.3"])
    with pytest.raises(SystemExit) as info:
        main()
    out = capsys.readouterr().out
    assert info.value.code == 0, out
    assert "the given shares sum to 0.6, not 1; rescaled to sum to 1" in out, out
    assert f"{source}=0.3 spread over its {n} domains: {0.3 / n:.6g} each" in out, out
    monkeypatch.setattr(sys, "argv", ["mixagent", "env", "run", str(MICRO), "--weights",
                                      f"{source}=0.3,{source}=0.7"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert f"'{source}' is given twice" in capsys.readouterr().err
