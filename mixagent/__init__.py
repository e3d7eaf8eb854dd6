"""mixagent: learn data mixtures for continual pre-training, then drive real CPT runs with them.

The package is laid out like the workflow: ``data`` (corpora → per-domain token shards, the
built-in corpus, the mixture sampler) → ``envs`` (the proxy CPT Gymnasium environment) →
``trajectories`` → ``policies`` → ``cpt`` → ``evaluation``. Importing the package is kept cheap:
heavy dependencies (torch, transformers, ray) are imported by the submodules that need them.
"""

from mixagent.envs.registration import register_envs
from mixagent.errors import ConfigError, DataError, MixagentError
from mixagent.version import __version__

register_envs()  # gymnasium.make("mixagent/ProxyCPT-v0", spec=...) works after `import mixagent`

__all__ = ["ConfigError", "DataError", "MixagentError", "__version__"]
