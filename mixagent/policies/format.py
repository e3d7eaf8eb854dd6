"""The policy format: a directory with ``config.json`` + ``model.safetensors`` + ``README.md``.

* ``config.json`` — ``format`` (``mixagent.policy/1``), ``kind`` (the registry key),
  ``params`` (the policy's typed parameters), for learned policies ``architecture`` and
  ``normalization`` (observation statistics), and ``provenance``: training data, domain spaces
  trained on, algorithm, hyper-parameters, compute spent, evaluated scores.
* ``model.safetensors`` — learned tensors only (absent for rule-based policies). Loading goes
  through ``safetensors`` and ``json``; nothing is ever unpickled, so a policy directory from
  someone else is safe to open.
* ``README.md`` — a card generated from the config (what it is, what it was trained on, scores).

Directories are written atomically (temporary sibling, then rename), replacing an older one;
other entries of the directory (training's ``checkpoints/``, ``history.json``) are carried over.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from mixagent.errors import ConfigError
from mixagent.policies.records import EvaluationRecord, evaluation_record, scenario_record
from mixagent.utils.io import atomic_directory, sha256_json

POLICY_FORMAT = "mixagent.policy/1"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
MODEL_NAME = "model.safetensors"
POLICY_FILES = (CONFIG_NAME, MODEL_NAME, CARD_NAME)
#: ``model.safetensors``' metadata. One key: safetensors writes several in arbitrary order, so
#: one policy saved twice gave two different files and two policy ids (the kind is in config.json)
MODEL_METADATA = {"format": POLICY_FORMAT}
#: what training writes beside a policy; kept when the policy is saved again
TRAINING_FILES = ("checkpoints", "history.json", "evaluation.json")


def policy_id(config: dict[str, Any], tensors: bytes | None) -> str:
    """The content hash of a policy: its config without ``provenance`` (recording results in
    the card must not change what it is) plus the sha256 of its ``model.safetensors`` bytes.
    Keys evaluation's episode cache."""
    body = {k: v for k, v in config.items() if k != "provenance"}
    tens = hashlib.sha256(tensors).hexdigest() if tensors else None
    return sha256_json({"config": body, "tensors": tens})[:16]


def content_id(config: dict[str, Any], tensors: dict[str, Any]) -> str:
    """The content hash of a policy in memory: its config without ``provenance`` plus each
    tensor's name, dtype, shape and bytes; the key of held-out selection's score cache.

    Not :func:`policy_id` of the bytes :func:`save_policy_dir` would write: files written
    before 2026-12-07 carry two metadata keys, which safetensors writes in arbitrary order, so
    their bytes cannot be reproduced from memory (evaluation hashes the file on disk, which is
    stable once written)."""
    import torch

    body = {k: v for k, v in json.loads(json.dumps(config)).items() if k != "provenance"}
    digest = {k: [str(v.dtype), list(v.shape),
                  hashlib.sha256(v.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()]
              for k, v in sorted(_plain(tensors).items())}
    return sha256_json({"config": body, "tensors": digest or None})[:16]


def _plain(tensors: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def save_policy_dir(path: Path, config: dict[str, Any], tensors: dict[str, Any],
                    card: str | None = None) -> Path:
    """Write a policy's ``config`` and ``tensors`` to ``path`` (replacing an existing policy
    directory there); the card defaults to :func:`render_card` of the config.

    Takes plain data, not a policy object, so this module does not import the protocol
    (:mod:`mixagent.policies.protocol` imports it: saving and loading are the format's job).
    """
    extra = [p for p in path.iterdir() if p.name not in POLICY_FILES] if path.is_dir() else []
    if extra and not (path / CONFIG_NAME).is_file() and not all(p.name in TRAINING_FILES for p in extra):
        raise ConfigError(f"{path}: exists and is not a policy directory; choose another --out")
    with atomic_directory(path, replace=True) as tmp:
        for p in extra:  # keep what training wrote beside the policy (checkpoints, history)
            os.replace(p, tmp / p.name)
        if tensors:
            from safetensors.torch import save_file

            save_file(_plain(tensors), str(tmp / MODEL_NAME), metadata=MODEL_METADATA)
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (tmp / CARD_NAME).write_text(card if card is not None else render_card(config),
                                     encoding="utf-8")
    return path


def read_config(path: Path) -> dict[str, Any]:
    """``config.json`` of a policy directory, checked for format and kind."""
    cfg_path = path / CONFIG_NAME
    if not cfg_path.is_file():
        raise ConfigError(f"{path}: not a policy directory (no {CONFIG_NAME}); policies are written "
                          "by 'mixagent train' or MixingPolicy.save()")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{cfg_path}: not valid JSON: {err}") from None
    if not isinstance(config, dict) or config.get("format") != POLICY_FORMAT:
        raise ConfigError(f"{cfg_path}: format is {config.get('format') if isinstance(config, dict) else None!r}, "
                          f"expected {POLICY_FORMAT!r}")
    if "kind" not in config:
        raise ConfigError(f"{cfg_path}: has no 'kind'")
    return config


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file, or None if it is.

    Reads only the header and compares the byte ranges it declares with the file's size, so a
    truncated copy (an interrupted copy or save) is caught before a loader fails deep inside with
    a message that does not name the file; cheap for a multi-gigabyte model too.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"truncated ({size} bytes, not even the 8-byte header length)"
            n = int.from_bytes(head, "little")
            if n > size - 8:
                return f"truncated or corrupt (its header declares {n} bytes, the file has {size})"
            header = json.loads(f.read(n))
    except FileNotFoundError:
        return "missing"
    except IsADirectoryError:
        return "a directory, not a file"
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    except (ValueError, UnicodeDecodeError):
        return "corrupt (its header is not valid JSON)"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
                  default=0)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return "corrupt (its header does not describe tensors)"
    if 8 + n + end > size:
        return f"truncated (its tensors need {8 + n + end} bytes, the file has {size})"
    return None


def read_tensors(path: Path, config: dict[str, Any], required: bool) -> dict[str, Any]:
    """The tensors of the policy directory ``path`` (json + safetensors only; ``{}`` when it has
    none and ``required`` is false). A missing, truncated or corrupt file is a
    :class:`ConfigError` that names it and says what to do."""
    tensors: dict[str, Any] = {}
    model = path / MODEL_NAME
    if model.exists():
        problem = safetensors_problem(model)
        if problem is None:
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                tensors = load_file(str(model))
            except (SafetensorError, OSError) as err:
                problem = f"corrupt ({err})"
        if problem is not None:
            raise ConfigError(f"{model}: the policy's weights are {problem}; copy the policy "
                              "directory again from its source, or re-train the policy")
    elif required:
        raise ConfigError(f"{model}: missing; a {config['kind']} policy needs its learned weights "
                          "beside config.json. Copy the whole policy directory (config.json and "
                          f"{MODEL_NAME}), or re-train the policy")
    return tensors


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v) if len(v) <= 8 else f"{len(v)} values"
    return str(v)


def _evaluation_table(evals: EvaluationRecord) -> list[str]:
    """Lines for the evaluation record: this policy's score per scenario, then one row per
    baseline with the paired difference, win rate and verdict."""

    def ci(mean: float, hw: float | None) -> str:
        return f"{mean:+.5f}" + (f" ± {hw:.5f}" if hw is not None else " (n=1)")

    lines = [f"Report: `{evals.report}`; seeds {_fmt(evals.seeds)}.", "",
             "| scenario | this policy (balanced) | rank | baseline | baseline balanced | "
             "difference (95% CI) | win rate | verdict |", "|---|---|---|---|---|---|---|---|"]
    for sc in evals.scenarios:
        name = sc.scenario + (" (trained on)" if sc.in_distribution else "")
        mine = ci(sc.balanced.mean, sc.balanced.half_width)
        if not sc.vs:
            lines.append(f"| {name} | {mine} | {sc.rank}/{sc.of} | — | — | — | — | — |")
        for v in sc.vs:
            lines.append(f"| {name} | {mine} | {sc.rank}/{sc.of} | {v.baseline} | "
                         f"{v.baseline_balanced:+.5f} | {ci(v.diff, v.diff_half_width)} | "
                         f"{v.win_rate:.2f} | {v.verdict} |")
    return lines


#: domain spaces of one name listed one per line in a card; more are summarised in one line
CARD_SPACES = 8


def render_card(config: dict[str, Any]) -> str:
    """A Markdown card from ``config.json``: every number in it comes from the config."""
    prov = config.get("provenance", {})
    lines = [f"# {prov.get('name') or config['kind']}", "",
             f"A mixagent mixing policy of kind `{config['kind']}` ({POLICY_FORMAT}). Load it with "
             "`mixagent.policies.load_policy(DIR)` or pass `policy:DIR` wherever a policy is "
             "accepted; `mixagent policy info DIR` prints this summary.", ""]
    if prov.get("description"):
        lines += [prov["description"], ""]
    lines += ["## Parameters", ""]
    lines += [f"- `{k}`: {_fmt(v)}" for k, v in config.get("params", {}).items()] or ["- none"]
    if "architecture" in config:
        lines += ["", "## Architecture", ""]
        lines += [f"- `{k}`: {_fmt(v)}" for k, v in config["architecture"].items()]
    spaces = prov.get("trained_on") or []
    if spaces:
        lines += ["", "## Trained on", ""]
        by_name: dict[str, list[tuple[int, int, int]]] = {}  # (domains, source, target)
        for s in spaces:
            roles = list(s.get("roles", []))
            by_name.setdefault(s.get("name") or "unnamed", []).append(
                (len(s.get("names", [])), roles.count("source"), roles.count("target")))
        for name, group in by_name.items():
            if len(group) <= CARD_SPACES:
                lines += [f"- `{name}`: {k} domains ({src} source, {tgt} target)"
                          for k, src, tgt in group]
                continue
            # a scenario family: one line, not one per sampled scenario (config.json has them all)
            k, src, tgt = zip(*group, strict=True)
            lines.append(f"- `{name}`: {len(group)} domain spaces, {min(k)}–{max(k)} domains "
                         f"({min(src)}–{max(src)} source, {min(tgt)}–{max(tgt)} target); each "
                         "listed under `provenance.trained_on` in config.json")
    scenario = scenario_record(config)
    if scenario is not None:
        lines += ["", "## Scenario (reward and observation it was trained with)", "",
                  f"- env spec: `{scenario.name or 'unnamed'}`",
                  f"- reward: `{json.dumps(scenario.reward.model_dump(mode='json'))}`",
                  f"- observation: `{json.dumps(scenario.observation.model_dump(mode='json'))}`"]
    data = prov.get("data")
    if data:
        lines += ["", "## Data", ""]
        lines += [f"- {k}: {_fmt(v)}" for k, v in data.items() if k != "trajectories"]
        lines += [f"- trajectories: {', '.join(f'`{t}`' for t in data.get('trajectories', []))}"]
    if prov.get("training"):
        lines += ["", "## Training", ""]
        lines += [f"- {k}: {_fmt(v)}" for k, v in prov["training"].items()]
    if prov.get("compute"):
        lines += ["", "## Compute", ""]
        lines += [f"- {k}: {_fmt(v)}" for k, v in prov["compute"].items()]
    try:
        evals = evaluation_record(config)
    except ConfigError as err:  # a card is still written; it says why the scores are missing
        lines += ["", "## Evaluation", "", f"Not shown: {err}"]
    else:
        if evals is not None:
            lines += ["", "## Evaluation", ""]
            if evals.description:
                lines += [evals.description, ""]
            lines += _evaluation_table(evals)
    lines += ["", "---", "Generated from config.json by mixagent.policies.format.render_card.", ""]
    return "\n".join(lines)
