"""Export a trajectory collection to Minari, the Farama offline-RL dataset format.

Why: offline-RL libraries (d3rlpy, torchrl, Minari's own tools) read Minari datasets, not our
Parquet shards. The export is a *view* of a collection, never a new source of truth: the shards
stay the record (with every mixagent column); the Minari dataset carries what those libraries
consume — observations, actions, rewards, terminations, truncations — plus each episode's
provenance in its episode metadata.

Choices (docs/TRAJECTORIES.md, "Export to Minari"):

- **Only each episode's continued path.** A Minari episode is one linear chain
  (``observations[t+1]`` follows ``actions[t]``); branch alternatives (``--branch K``) start from
  the same snapshot and lead nowhere, so they cannot be placed in it. They are counted and
  reported, and stay in the Parquet shards.
- **Flat observations.** The shards store ``gymnasium.spaces.flatten`` of the env's ``Dict``
  observation; the dataset's observation space is ``flatten_space`` of the env's own ``Dict``
  space (same bounds, float32), so readers that want flat vectors (d3rlpy, torchrl) get them and
  ``gymnasium.spaces.unflatten`` recovers the ``Dict``. The action space is the env's
  ``Box(-1, 1, (K,), float32)``.
- **One shape per dataset.** A scenario family's episodes may have different domain counts; a
  Minari dataset has one observation and action space, so such a collection is refused unless
  one scenario is chosen (``scenario=``).
- **Minari episode ids are 0..N-1** in collection-episode order (Minari needs them dense; a
  collection with skipped bad shards has gaps); the collection's episode index, ``eps_id``,
  scenario, explorer and seeds are in each episode's metadata, the env seed also as ``seed``.
- **Written elsewhere, then moved into place**, so a failed export never leaves a half-written
  dataset at ``out`` and ``overwrite`` never destroys the previous export before the new one is
  complete. Minari writes under ``$MINARI_DATASETS_PATH`` (default ``~/.minari``); the variable
  is pointed at the temporary root for the call, so nothing lands in the home directory.

minari is an optional dependency (``pip install -e '.[minari]'``), imported only here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from mixagent.trajectories.dataset import TrajectorySet, load
from mixagent.trajectories.storage import SPEC_FILE, TrajectoryError, read_json

log = logging.getLogger(__name__)

#: written at the root of every export: provenance, and the mark that lets ``overwrite`` replace
#: a folder (a folder without it is not ours, and is never deleted)
EXPORT_MARKER = "mixagent-export.json"
EXPORT_FORMAT = "mixagent.minari-export/1"
NAMESPACE = "mixagent"
INSTALL_HINT = "pip install -e '.[minari]'  (or: pip install 'minari[arrow]>=0.5.4,<0.6' pillow)"


class ExportError(TrajectoryError):
    """A collection cannot be exported as asked (missing extra, bad output, mixed shapes)."""


@dataclass
class MinariExport:
    """What :func:`export_minari` wrote.

    ``out`` is the Minari datasets root (load with ``MINARI_DATASETS_PATH=out``) and ``path`` the
    dataset folder inside it; ``episodes`` maps Minari episode ids to collection ``eps_id``.
    """

    out: Path
    dataset_id: str
    path: Path
    episodes: list[str] = field(default_factory=list)
    transitions: int = 0
    alternatives_left_out: int = 0
    observation_size: int = 0
    num_domains: int = 0


def default_dataset_id(name: str, scenario: str | None = None) -> str:
    """``mixagent/<collection name>[-<scenario>]-v0`` with characters Minari's id pattern
    rejects replaced by ``_`` (its ids are ``(namespace/)name(-vN)``)."""
    base = name if scenario is None else f"{name}-{scenario}"
    clean = re.sub(r"[^\w-]+", "_", base).strip("-_") or "trajectories"
    return f"{NAMESPACE}/{clean}-v0"


@contextlib.contextmanager
def _datasets_root(root: Path) -> Iterator[None]:
    """Point ``MINARI_DATASETS_PATH`` at ``root`` for the block: minari has no path argument on
    ``create_dataset_from_buffers`` and would otherwise write under ``~/.minari``."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _import_minari() -> Any:
    try:
        import minari
        from minari.dataset._storages import get_storage_keys
        from PIL import Image  # noqa: F401 - minari's arrow storage imports it without declaring it
    except ImportError as err:
        raise ExportError(f"the Minari export needs the optional 'minari' extra ({err}); install "
                          f"it with: {INSTALL_HINT}") from None
    if "arrow" not in get_storage_keys():
        raise ExportError(f"minari is installed without its arrow backend; install: {INSTALL_HINT}")
    return minari


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that holds anything unless ``overwrite`` and it is one of our exports."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ExportError(f"{out} already exists and is not empty; pass --overwrite to replace a "
                          "previous export, or choose another --out")
    if not (out / EXPORT_MARKER).is_file():
        raise ExportError(f"{out} is not a mixagent Minari export (no {EXPORT_MARKER}); refusing "
                          "to replace it even with --overwrite — choose another --out")


def _spec_observation(root: Path, card: dict[str, Any], scenario: str) -> tuple[dict[str, Any], int]:
    """(the spec's ``observation`` section, K) of a scenario ('' = the collection's own spec)."""
    if scenario:
        entry = card.get("scenarios", {}).get(scenario)
        if not entry or "spec" not in entry or "domain_names" not in entry:
            raise ExportError(f"{root}: the card does not describe scenario {scenario!r} (its spec "
                              "and domains); run 'mixagent collect ... --resume' to rewrite the card")
        return dict(entry["spec"].get("observation", {})), len(entry["domain_names"])
    spec = card.get("env_spec", {}).get("spec")
    if spec is None:  # no card (or an old one): the spec as collected
        spec = read_json(root / SPEC_FILE, "env spec").get("spec")
    if spec is None:
        raise ExportError(f"{root}: no env spec recorded; cannot rebuild the observation space")
    k = len(card.get("domain_names") or [])
    return dict(spec.get("observation", {})), k


def _spaces(obs_spec: dict[str, Any], k: int) -> tuple[Any, Any]:
    """The env's spaces: ``flatten_space`` of its ``Dict`` observation, and its action Box."""
    from gymnasium import spaces

    from mixagent.envs.observation import feature_layout, observation_space

    dict_space = observation_space(k, float(obs_spec.get("loss_max", 20.0)),
                                   float(obs_spec.get("score_max", 1.0)),
                                   feature_layout(obs_spec.get("features", [])))
    return spaces.flatten_space(dict_space), spaces.Box(-1.0, 1.0, (k,), np.float32)


def _space_key(box: Any) -> tuple[Any, ...]:
    return (box.shape, box.low.tobytes(), box.high.tobytes())


def episode_buffers(ts: TrajectorySet) -> list[dict[str, Any]]:
    """Each episode's continued path as Minari arrays: ``observations`` [T+1, D] (the ``obs``
    column, then the last ``new_obs``), ``actions`` [T, K], ``rewards``, ``terminations``,
    ``truncations`` [T], with provenance. Refuses a path whose ``obs[t+1] != new_obs[t]``
    (it would not be a chain)."""
    cont = ts.continuations()
    out: list[dict[str, Any]] = []
    for ep in pc.unique(cont.table["episode"]).to_pylist():
        rows = cont.filter(pc.equal(cont.table["episode"], ep))
        order = np.argsort(rows.table["t"].to_numpy(), kind="stable")
        t = rows.table.take(order)
        a = TrajectorySet(t).arrays()
        obs, new_obs = a["obs"], a["new_obs"]
        if not np.array_equal(obs[1:], new_obs[:-1]):
            raise ExportError(f"episode {ep}: obs[t+1] differs from new_obs[t] on its continued "
                              "path; the collection is inconsistent")
        out.append({
            "episode": int(ep),
            "eps_id": t["eps_id"][0].as_py(),
            "scenario": t["scenario"][0].as_py(),
            "explorer": t["explorer"][0].as_py(),
            "env_seed": int(t["env_seed"][0].as_py()),
            "explorer_seed": int(t["explorer_seed"][0].as_py()),
            "observations": np.concatenate([obs, new_obs[-1:]]),
            "actions": a["actions"],
            "rewards": np.asarray(a["rewards"], np.float64),
            "terminations": np.asarray(a["terminateds"], bool),
            "truncations": np.asarray(a["truncateds"], bool),
        })
    out.sort(key=lambda e: e["episode"])
    return out


def export_minari(collection: str | Path, out: str | Path, *, dataset_id: str | None = None,
                  scenario: str | None = None, overwrite: bool = False,
                  skip_bad: bool = False) -> MinariExport:
    """Write collection ``collection`` as a Minari dataset (arrow backend) under datasets root ``out``.

    Args:
        collection: a folder written by ``mixagent collect``.
        out: the Minari datasets root to create (``MINARI_DATASETS_PATH`` when loading); must
            not exist or be empty, unless ``overwrite`` and it is a previous export.
        dataset_id: Minari id (``namespace/name-vN``); default ``mixagent/<collection name>-v0``.
        scenario: a scenario family's scenario id: export only its episodes (required when the
            family's episodes have different domain counts).
        overwrite: replace a previous export at ``out`` (only once the new one is complete).
        skip_bad: leave out bad shards (with a warning) instead of refusing.

    Raises :class:`ExportError` (a :class:`TrajectoryError`) with the reason and the fix.
    """
    root, out = Path(collection), Path(out)
    if root.resolve() == out.resolve() or root.resolve() in out.resolve().parents:
        raise ExportError(f"--out {out} is inside the collection {root}; choose a folder outside it")
    _check_out(out, overwrite)
    minari = _import_minari()
    from minari.dataset.minari_dataset import parse_dataset_id

    ts = load(root, skip_bad=skip_bad)
    card = ts.cards[0] if ts.cards else {}
    if scenario is not None:
        ts = ts.filter(pc.equal(ts.table["scenario"], scenario))
        if not len(ts):
            found = sorted(set(load(root, skip_bad=skip_bad).table["scenario"].to_pylist()) - {""})
            raise ExportError(f"{root}: no episodes of scenario {scenario!r}; scenarios in the "
                              f"collection: {', '.join(found) or 'none (not a family collection)'}")
    if not len(ts):
        raise ExportError(f"{root}: the collection holds no episodes; nothing to export")
    dataset_id = dataset_id or default_dataset_id(root.resolve().name, scenario)
    try:
        parse_dataset_id(dataset_id)
    except ValueError as err:
        raise ExportError(f"invalid Minari dataset id: {err}") from None

    episodes = episode_buffers(ts)
    # one observation/action space for the whole dataset: refuse a mix of shapes
    boxes: dict[tuple[Any, ...], tuple[Any, Any, list[str]]] = {}
    for ep in episodes:
        obs_spec, k = _spec_observation(root, card, ep["scenario"])
        obs_box, act_box = _spaces(obs_spec, k)
        if ep["observations"].shape[1] != obs_box.shape[0] or ep["actions"].shape[1] != k:
            raise ExportError(f"episode {ep['episode']}: observation/action widths "
                              f"{ep['observations'].shape[1]}/{ep['actions'].shape[1]} do not match "
                              f"the recorded spec ({obs_box.shape[0]}/{k} for {k} domains)")
        entry = boxes.setdefault(_space_key(obs_box), (obs_box, act_box, []))
        if ep["scenario"] not in entry[2]:
            entry[2].append(ep["scenario"])
    if len(boxes) > 1:
        kinds = "; ".join(f"{b[1].shape[0]} domains (observation {b[0].shape[0]}): "
                          f"{', '.join(b[2][:5])}{' …' if len(b[2]) > 5 else ''}"
                          for b in boxes.values())
        raise ExportError(f"{root}: episodes have different observation/action spaces ({kinds}); "
                          "a Minari dataset has one — export one scenario at a time with "
                          "--scenario ID")
    obs_box, act_box, _ = next(iter(boxes.values()))
    alternatives = len(ts) - sum(len(e["rewards"]) for e in episodes)
    transitions = len(ts) - alternatives

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _write(minari, tmp, dataset_id, episodes, obs_box, act_box, card, root, scenario,
               alternatives)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result = MinariExport(out=out, dataset_id=dataset_id, path=_dataset_path(out, dataset_id),
                          episodes=[e["eps_id"] for e in episodes], transitions=transitions,
                          alternatives_left_out=alternatives, observation_size=obs_box.shape[0],
                          num_domains=act_box.shape[0])
    log.info("exported %d episode(s), %d transitions of %s to Minari dataset %s at %s",
             len(episodes), transitions, root, dataset_id, out)
    return result


def _dataset_path(root: Path, dataset_id: str) -> Path:
    return root / dataset_id


def _write(minari: Any, tmp: Path, dataset_id: str, episodes: list[dict[str, Any]], obs_box: Any,
           act_box: Any, card: dict[str, Any], root: Path, scenario: str | None,
           alternatives: int) -> None:
    from minari.data_collector.episode_buffer import EpisodeBuffer

    buffers = [EpisodeBuffer(id=i, seed=e["env_seed"], observations=e["observations"],
                             actions=e["actions"], rewards=e["rewards"].tolist(),
                             terminations=e["terminations"].tolist(),
                             truncations=e["truncations"].tolist())
               for i, e in enumerate(episodes)]
    name = card.get("env_spec", {}).get("name", "")
    explorers = sorted({e["explorer"] for e in episodes})
    description = (
        f"mixagent trajectories '{root.resolve().name}' (env spec {name!r}, hash "
        f"{card.get('env_spec_hash', '')}, collection {card.get('collection_id', '')}"
        f"{', scenario ' + scenario if scenario else ''}): data-mixing episodes of proxy "
        "continual pre-training. Observations are gymnasium.spaces.flatten of the env's "
        "Dict(domains=Box(K, F), global=Box(G)) (layout in mixagent-export.json); actions are one "
        "logit per domain in [-1, 1]. Only each episode's continued path is exported "
        f"({alternatives} branch-alternative transitions left out); the Parquet shards hold "
        "every column.")
    with _datasets_root(tmp), warnings.catch_warnings():
        # author, e-mail, permalink: unknown to an export; minari warns for each missing one
        warnings.filterwarnings("ignore", message=r".*is set to None.*", category=UserWarning)
        # no gymnasium env is registered for a proxy CPT scenario: the spaces are given explicitly
        warnings.filterwarnings("ignore", message=r"env_spec is None.*", category=UserWarning)
        dataset = minari.create_dataset_from_buffers(
            dataset_id=dataset_id, buffer=buffers, observation_space=obs_box,
            action_space=act_box, algorithm_name=", ".join(explorers), description=description,
            data_format="arrow")
        dataset.storage.update_episode_metadata(
            [{"mixagent_episode": e["episode"], "eps_id": e["eps_id"], "scenario": e["scenario"],
              "explorer": e["explorer"], "env_seed": e["env_seed"],
              "explorer_seed": e["explorer_seed"]} for e in episodes],
            range(len(episodes)))
    marker = {
        "format": EXPORT_FORMAT,
        "dataset_id": dataset_id,
        "source": str(root.resolve()),
        "collection_id": card.get("collection_id"),
        "config_hash": card.get("config_hash"),
        "env_spec_hash": card.get("env_spec_hash"),
        "scenario": scenario,
        "observation_layout": (card.get("scenarios", {}).get(scenario, {}).get("observation_layout")
                               if scenario else card.get("observation_layout")),
        "episodes": [e["eps_id"] for e in episodes],
        "transitions": sum(len(e["rewards"]) for e in episodes),
        "branch_alternatives_left_out": alternatives,
        "minari_version": getattr(minari, "__version__", ""),
    }
    (tmp / EXPORT_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished export into place; a previous export is removed only afterwards."""
    old = None
    if out.exists():
        if any(out.iterdir()):
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        else:
            out.rmdir()
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
