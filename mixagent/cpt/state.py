"""The mixture state of a CPT run, saved as JSON beside every Trainer checkpoint.

The Trainer saves model, optimizer, scheduler and RNG states but nothing about the data loader,
and it rebuilds callbacks from JSON arguments, so the mixture keeps its own file
(``checkpoint-N/mixagent_mixture.json``). It holds everything needed to continue exactly:

* the weight schedule (``[[start_sample, weights], ...]``) and the samples consumed at the
  checkpoint (``global_step × samples_per_step``) — the sampler is replayed to that point;
* the base evaluation (step 0), against which observations and scores are measured;
* every decision: step, observation, train loss fed back, weights, scores;
* the policy's run state (``policy_state``: :meth:`~mixagent.policies.protocol.MixingPolicy.
  state_dict`, plain JSON), loaded on resume, so resume does not depend on the policy being
  deterministic. A state written before it was recorded has none; the policy's online state is
  then rebuilt by replaying the decisions through ``reset`` / ``feedback`` / ``act`` (exact for
  a policy that is a deterministic function of its inputs and seed; a mismatch with the
  recorded weights is reported);
* what the decisions depend on — domains, seed, samples per step, ``reweight_every`` and the
  policy's fingerprint — so a resume under other settings is refused instead of continuing a
  run that is neither the old one nor a new one;
* the run's time so far (``timing``), so a summary written after a resume counts every process.

Fields added after the first release are optional: a state without them still loads, and only
the settings it records are checked.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mixagent.errors import ConfigError
from mixagent.utils.io import sha256_json, write_json_atomic

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
    reweight_every: int | None = None
    policy_id: str | None = None  # policy_fingerprint(): what the policy computes, not its path
    batch: dict[str, int] | None = None  # per_device_batch_size, gradient_accumulation_steps, world_size
    timing: dict[str, float] = field(default_factory=dict)  # run totals up to this checkpoint
    policy_state: dict[str, Any] | None = None  # MixingPolicy.state_dict() after the last decision

    def to_json(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, raw: dict[str, Any], where: str = "mixture state") -> MixtureState:
        if not isinstance(raw, dict) or raw.get("format") != STATE_FORMAT:
            raise ConfigError(f"{where}: not a mixagent CPT mixture state (format {STATE_FORMAT!r})")
        body = {k: v for k, v in raw.items() if k != "format"}
        try:
            body["decisions"] = [Decision(**d) for d in body.get("decisions", [])]
            return cls(**body)
        except TypeError as err:
            raise ConfigError(f"{where}: malformed mixture state ({err}); it was written by another "
                              "mixagent version or damaged") from None

    def check_compatible(self, current: MixtureState, where: str) -> None:
        """Refuse to continue this saved state under ``current``'s settings.

        ``self`` is the checkpoint's state. A resumed run must draw the same stream and make
        the same decisions as the run that saved it; anything else would silently produce a
        hybrid of two runs. Every difference is listed at once, each with the saved value to
        pass, so one rerun fixes them all.
        """
        problems = []
        options = {"domains": "--domains", "seed": "--seed", "seq_len": "--seq-len",
                   "reweight_every": "--reweight-every"}
        for key, option in options.items():
            saved, now = getattr(self, key), getattr(current, key)
            if saved is None or saved == now:  # None: a state written before this was recorded
                continue
            value = ",".join(saved) if isinstance(saved, list) else saved
            problems.append(f"{key}: the checkpoint has {saved!r}, this run has {now!r} "
                            f"(rerun with {option} {value})")
        if self.samples_per_step != current.samples_per_step:
            problems.append(f"samples per optimizer step: the checkpoint has {self.samples_per_step}"
                            f"{_layout(self.batch)}, this run has {current.samples_per_step}"
                            f"{_layout(current.batch)} ({_batch_advice(self, current)})")
        policy = _policy_problem(self, current)
        if policy:
            problems.append(policy)
        if problems:
            raise ConfigError(
                f"cannot resume from {where}: it was saved with other settings than this run's: "
                + "; ".join(problems) + ". Rerun --resume with the checkpoint's settings, or start "
                "a new run (another --out, or --overwrite to replace this one)")


def _layout(batch: dict[str, int] | None) -> str:
    if not batch:
        return ""
    return (f" (--batch-size {batch['per_device_batch_size']} × --grad-accum "
            f"{batch['gradient_accumulation_steps']} × {batch['world_size']} process"
            f"{'es' if batch['world_size'] != 1 else ''})")


def _batch_advice(saved: MixtureState, current: MixtureState) -> str:
    b, c = saved.batch, current.batch
    if b and c and b["world_size"] == c["world_size"]:
        return (f"rerun with --batch-size {b['per_device_batch_size']} --grad-accum "
                f"{b['gradient_accumulation_steps']}")
    return f"make --batch-size × --grad-accum × processes equal {saved.samples_per_step} again"


def _policy_problem(saved: MixtureState, current: MixtureState) -> str | None:
    if saved.policy_id is not None and current.policy_id is not None:
        if saved.policy_id == current.policy_id:
            return None  # the same policy, perhaps from another path: its decisions replay
        if saved.policy == current.policy:
            return (f"policy: {saved.policy} has changed since the checkpoint was written (its "
                    f"parameters or weights differ: fingerprint {saved.policy_id[:12]} then, "
                    f"{current.policy_id[:12]} now); restore the policy files the run started with")
    elif saved.policy == current.policy:
        return None
    return (f"policy: the checkpoint was written under {saved.policy!r}, this run has "
            f"{current.policy!r} (rerun with --policy {saved.policy})")


def policy_fingerprint(policy: Any) -> str:
    """A hash of what the policy computes: its config without provenance, and its tensors.

    Provenance is left out because ``mixagent evaluate`` records scores there without changing
    the policy; a moved or re-copied policy directory keeps its fingerprint, an edited one does not.
    """
    import torch

    config = {k: v for k, v in policy.config().items() if k != "provenance"}
    h = hashlib.sha256(sha256_json(config).encode())
    for name, tensor in sorted(policy.tensors().items()):
        t = torch.as_tensor(tensor).detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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
