"""The mixture state of a CPT run, saved as JSON beside every Trainer checkpoint.

The Trainer saves model, optimizer, scheduler and RNG states but nothing about the data loader,
and it rebuilds callbacks from JSON arguments, so the mixture keeps its own file
(``checkpoint-N/mixagent_mixture.json``). It holds everything needed to continue exactly:

* the weight schedule (``[[start_sample, weights], ...]``) and the samples consumed at the
  checkpoint (``global_step × samples_per_step``) — the sampler is replayed to that point;
* the base evaluation (step 0), against which observations and scores are measured;
* every decision: step, observation, train loss fed back, weights, scores. The policy's online
  state is rebuilt by replaying these decisions through ``reset`` / ``feedback`` / ``act``
  (policies have no state API; replay works for any policy that is a deterministic function of
  its inputs and seed, and a mismatch with the recorded weights is reported).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mixagent.errors import ConfigError
from mixagent.utils.io import write_json_atomic

STATE_FORMAT = "mixagent.cpt-mixture/1"
STATE_NAME = "mixagent_mixture.json"


@dataclass
class Decision:
    """One re-weighting decision, as the policy saw and made it."""

    step: int  # optimizer step at which it was made (0 = before training)
    start_sample: int  # global sample index from which its weights apply
    observation: dict[str, list[Any]]  # {"domains": K x F, "global": G}
    train_loss: float | None  # fed back to the policy before acting (None at step 0)
    weights: list[float]
    losses: list[float]
    tasks: dict[str, dict[str, float]]
    scores: dict[str, float]
    decision_seconds: float = 0.0
    eval_seconds: float = 0.0


@dataclass
class MixtureState:
    """Everything the mixture adds to a checkpoint (see module docstring)."""

    domains: list[str]
    seed: int
    seq_len: int
    samples_per_step: int
    policy: str
    base_losses: list[float] | None = None
    base_tasks: dict[str, dict[str, float]] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    schedule: list[list[Any]] = field(default_factory=list)
    consumed: int = 0
    global_step: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, raw: dict[str, Any], where: str = "mixture state") -> MixtureState:
        if not isinstance(raw, dict) or raw.get("format") != STATE_FORMAT:
            raise ConfigError(f"{where}: not a mixagent CPT mixture state (format {STATE_FORMAT!r})")
        body = {k: v for k, v in raw.items() if k != "format"}
        body["decisions"] = [Decision(**d) for d in body.get("decisions", [])]
        return cls(**body)

    def check_compatible(self, other: MixtureState, where: str) -> None:
        """A resumed run must mix the same domains the same way as the run that saved it."""
        for key in ("domains", "seed", "seq_len", "samples_per_step"):
            mine, theirs = getattr(self, key), getattr(other, key)
            if mine != theirs:
                raise ConfigError(f"{where}: saved with {key}={theirs!r} but this run has {key}={mine!r}; "
                                  "resume with the settings of the original run")


def save_state(state: MixtureState, checkpoint_dir: str | Path) -> Path:
    path = Path(checkpoint_dir) / STATE_NAME
    write_json_atomic(path, state.to_json())
    return path


def load_state(checkpoint_dir: str | Path) -> MixtureState:
    path = Path(checkpoint_dir) / STATE_NAME
    if not path.is_file():
        raise ConfigError(f"{checkpoint_dir}: no {STATE_NAME}; this checkpoint was not written by "
                          "a mixagent CPT run (or the run was killed while saving it)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: unreadable mixture state ({err})") from None
    return MixtureState.from_json(raw, str(path))
