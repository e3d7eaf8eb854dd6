"""The typed config of a production CPT run (one place for every setting of ``mixagent cpt``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mixagent.config import StrictModel
from mixagent.envs.spec import ObservationSpec, RewardSpec
from mixagent.proxy.config import EvalSpec


class CPTConfig(StrictModel):
    """A CPT run of a Hugging Face causal LM under a mixing policy.

    ``reweight_every`` optimizer steps the policy sets new weights from fresh held-out losses;
    they apply ``lead_steps`` steps later (covering the data loader's prefetch: raise it with
    many loader workers). ``reward`` / ``observation`` must match the env spec the policy was
    trained on (defaults are the env defaults). ``trainer_args`` passes any other
    ``TrainingArguments`` key through unchanged.
    """

    model: str = Field(description="HF model directory (config, weights, tokenizer)")
    data: str = Field(description="mixagent data directory tokenized with the model's tokenizer")
    policy: str = Field(description="'baseline:NAME[?k=v]' or 'policy:DIR' (or a policy directory)")
    out: str
    max_steps: int = Field(gt=0)
    reweight_every: int = Field(gt=0)
    domains: list[str] | None = None
    fields: list[str] | None = None
    seq_len: int = Field(default=128, gt=1)
    per_device_batch_size: int = Field(default=8, gt=0)
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    learning_rate: float = Field(default=1e-4, gt=0)
    lr_scheduler_type: str = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    seed: int = Field(default=0, ge=0, description="model/Trainer seed and the sampler's data order")
    policy_seed: int = Field(default=0, ge=0)
    save_steps: int | None = Field(default=None, gt=0, description="default: no intermediate checkpoints")
    save_total_limit: int | None = Field(default=None, gt=0)
    logging_steps: int = Field(default=10, gt=0)
    lead_steps: int = Field(default=3, ge=1)
    dataloader_num_workers: int = Field(default=0, ge=0)
    eval: EvalSpec = Field(default_factory=lambda: EvalSpec(sequences_per_domain=4, batch_size=32))
    reward: RewardSpec = Field(default_factory=RewardSpec)
    observation: ObservationSpec = Field(default_factory=ObservationSpec)
    report_to: list[str] = Field(default_factory=lambda: ["none"])
    resume: bool = Field(default=False, description="continue from the newest complete checkpoint in out")
    overwrite: bool = Field(default=False, description="delete a previous run's outputs in out first")
    record_samples: bool = Field(default=False, description="write the sample ids each rank read")
    plot: bool = True
    trainer_args: dict[str, Any] = Field(default_factory=dict)
