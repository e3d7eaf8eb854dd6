"""Production CPT: a mixing policy drives the data loader of a Hugging Face ``Trainer`` run.

``dataset`` (map-style dataset + torch sampler over the mixture sampler's global stream) →
``mixer`` (evaluate, observe like the env, ask the policy, schedule ahead; rank 0 decides) →
``callback`` (``MixingCallback``: when to decide, logging, saving) → ``state`` (the mixture
state as JSON beside each checkpoint) → ``outputs`` (the --out folder: refuse, overwrite, pick
the checkpoint to resume) → ``run`` (``run_cpt``: the wiring, resume, summary).
``python -m mixagent.cpt CONFIG.json`` runs one config (for ``torchrun``).
"""

from __future__ import annotations

from mixagent.cpt.config import CPTConfig

__all__ = ["CPTConfig", "run_cpt"]


def run_cpt(*args: object, **kwargs: object) -> object:
    """See :func:`mixagent.cpt.run.run_cpt` (imported lazily: it imports transformers)."""
    from mixagent.cpt.run import run_cpt as _run

    return _run(*args, **kwargs)  # type: ignore[arg-type]
