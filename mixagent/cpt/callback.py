"""``MixingCallback``: the Trainer hook that re-weights the data mixture every N steps.

The callback only decides *when*; :class:`~mixagent.cpt.controller.MixtureController` decides *what*.
It holds a live reference to the controller, so it is not an ``ExportableState`` callback (the
Trainer rebuilds those from JSON arguments on resume, which cannot carry a sampler): the
mixture state goes into its own JSON file in every checkpoint (:mod:`mixagent.cpt.state`).
Weights and scores are logged with ``trainer.log`` so every ``report_to`` integration
(TensorBoard, W&B, ...) receives them; bind the trainer with :meth:`MixingCallback.bind`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from mixagent.cpt.controller import MixtureController
from mixagent.cpt.state import Decision, save_state
from mixagent.envs.observation import ALIGNMENT_FEATURES, V1_LAYOUT, FeatureLayout

log = logging.getLogger(__name__)


def mixture_logs(dec: Decision, domains: list[str],
                 layout: FeatureLayout = V1_LAYOUT) -> dict[str, float]:
    """The Trainer-log entries of one decision: ``mixture/weight/<domain>``, field scores, losses
    and, when observed, ``mixture/align_source|align_target/<domain>`` (what the policy saw)."""
    out = {f"mixture/weight/{d}": w for d, w in zip(domains, dec.weights, strict=True)}
    out.update({f"mixture/score/{k}": v for k, v in dec.scores.items()})
    out.update({f"mixture/loss/{d}": v for d, v in zip(domains, dec.losses, strict=True)})
    if layout.alignment:
        for name in ALIGNMENT_FEATURES:
            j = layout.domains.index(name)
            out.update({f"mixture/{name}/{d}": float(row[j])
                        for d, row in zip(domains, dec.observation["domains"], strict=True)})
    out["mixture/start_sample"] = float(dec.start_sample)
    return out


class MixingCallback(TrainerCallback):
    """Asks the policy for weights at step 0 and every ``reweight_every`` steps after."""

    def __init__(self, controller: MixtureController, trainer: Any | None = None):
        self.controller = controller
        self.trainer = trainer
        self._last_step = 0

    def bind(self, trainer: Any) -> MixingCallback:
        """Give the callback the trainer whose log receives the weights."""
        self.trainer = trainer
        return self

    def _train_loss(self, state: TrainerState, step: int) -> float | None:
        """Mean logged training loss since the last decision (what the Trainer logged)."""
        vals = [h["loss"] for h in state.log_history
                if "loss" in h and self._last_step < h.get("step", -1) <= step]
        return float(sum(vals) / len(vals)) if vals else None

    def _decide(self, args: TrainingArguments, state: TrainerState, model: Any) -> None:
        step = state.global_step
        dec = self.controller.decide(step, model, args.device,
                                     None if step == 0 else self._train_loss(state, step))
        self._last_step = step
        if self.trainer is not None:
            self.trainer.log(mixture_logs(dec, self.controller.state.domains,
                                          self.controller.layout))
        if state.is_world_process_zero:
            log.info("step %d: weights %s from sample %d (balanced score %.4f)", step,
                     [round(w, 3) for w in dec.weights], dec.start_sample, dec.scores["balanced"])

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: Any = None, **kwargs: Any) -> None:
        decisions = self.controller.state.decisions
        if decisions:  # resumed: the decisions up to the checkpoint are already in the schedule
            self._last_step = decisions[-1].step
            return
        if state.global_step != 0:
            raise RuntimeError("training resumed from a checkpoint but the mixture state was not "
                               "restored; use run_cpt(resume=True) or MixtureController.restore")
        self._decide(args, state, model)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    model: Any = None, **kwargs: Any) -> None:
        if self.controller.plan.is_decision_step(state.global_step):
            self._decide(args, state, model)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:
        if not args.should_save:
            return
        ckpt = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if not ckpt.is_dir():
            log.warning("checkpoint folder %s not found; mixture state not saved", ckpt)
            return
        save_state(self.controller.capture(state.global_step), ckpt)


