"""Seeded, bounded samples of the inputs: for training the tokenizer and fitting the clusterers.

One streaming pass, before tokenization; memory is bounded by the sample sizes in the config, not
by the corpus.
"""

from __future__ import annotations

import logging
import random

from mixagent.data.build.plan import BuildPlan
from mixagent.data.build.readers import iter_input_batches
from mixagent.utils.progress import Progress

logger = logging.getLogger(__name__)


class _Reservoir:
    """Uniform sample of at most ``size`` items from a stream (Algorithm R), seeded."""

    def __init__(self, size: int, seed: str):
        self.size = size
        self.items: list[str] = []
        self.seen = 0
        self._rng = random.Random(seed)

    def add(self, item: str) -> None:
        if self.size <= 0:
            return
        if len(self.items) < self.size:
            self.items.append(item)
        else:
            j = self._rng.randrange(self.seen + 1)
            if j < self.size:
                self.items[j] = item
        self.seen += 1


def _shares(total: int, n: int) -> list[int]:
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


def sample_inputs(plan: BuildPlan, cache_dir: str) -> tuple[list[str], dict[str, list[str]]]:
    """One streaming pass drawing the tokenizer sample and each clustered input's fit sample.

    Each input gets an equal share of the tokenizer sample, so a small target corpus is as present
    in the vocabulary as a large source corpus. Memory is bounded by the sample sizes in the config.
    """
    cfg = plan.config
    train = cfg.tokenizer.train
    tok_shares = (
        _shares(train.sample_documents, len(plan.inputs)) if train else [0] * len(plan.inputs)
    )
    tok_sample: list[str] = []
    cluster_samples: dict[str, list[str]] = {}
    todo = [
        (inp, share)
        for inp, share in zip(plan.inputs, tok_shares, strict=True)
        if share > 0 or inp.config.domain.cluster is not None
    ]
    if not todo:
        return tok_sample, cluster_samples
    with Progress(None, "sampling documents", "doc", logger=logger) as bar:
        for inp, share in todo:
            bar.set_postfix(input=inp.label)
            cl = inp.config.domain.cluster
            tok_res = _Reservoir(share, f"{cfg.seed}:tokenizer:{inp.label}")
            cl_res = _Reservoir(cl.sample_documents if cl else 0, f"{cfg.seed}:cluster:{inp.label}")
            tok_chars = train.sample_max_chars if train else 0
            cl_chars = cl.max_chars if cl else 0
            for batch in iter_input_batches(inp, cfg.batch_size, cache_dir):
                for t in batch.texts:
                    tok_res.add(t[:tok_chars])
                    cl_res.add(t[:cl_chars])
                bar.update(len(batch.texts))
            tok_sample.extend(tok_res.items)
            if cl:
                cluster_samples[inp.label] = cl_res.items
    return tok_sample, cluster_samples
