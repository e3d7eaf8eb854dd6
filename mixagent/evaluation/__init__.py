"""Evaluation: policies × scenarios × seeds, in parallel, into a report with intervals and plots.

``mixagent evaluate`` (:mod:`mixagent.cli.evaluate`) and :func:`evaluate` run every policy on
every scenario (env spec) on the same env seeds, tune the baselines that need tuning on separate
seeds, and write ``report.md``, ``report.json`` and PNG plots. Modules:

* :mod:`~mixagent.evaluation.config` — ``EvaluateConfig`` (YAML + CLI flags);
* :mod:`~mixagent.evaluation.scenarios` / :mod:`~mixagent.evaluation.policies` — what is evaluated;
* :mod:`~mixagent.evaluation.worker` / :mod:`~mixagent.evaluation.store` — episodes and their cache;
* :mod:`~mixagent.evaluation.tuning` — best fixed ratio and RegMix per scenario;
* :mod:`~mixagent.evaluation.runner` — orchestration (Ray pool or in-process);
* :mod:`~mixagent.evaluation.stats` / :mod:`~mixagent.evaluation.analysis` — the numbers;
* :mod:`~mixagent.evaluation.report` / :mod:`~mixagent.evaluation.plots` /
  :mod:`~mixagent.evaluation.card` — the outputs.
"""

from mixagent.evaluation.config import EvaluateConfig, load_evaluate_config
from mixagent.evaluation.runner import EvaluationResult, evaluate

__all__ = ["EvaluateConfig", "EvaluationResult", "evaluate", "load_evaluate_config"]
