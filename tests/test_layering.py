"""Layering at run time: what the static contract (``lint-imports``, pyproject.toml) cannot see.

import-linter reads import statements, including lazy ones inside functions, but not modules
loaded by name (``importlib.import_module("mixagent.policies")``), which is how trajectories
used to reach the policies layer for its explorers. Building and running trajectories' own
explorers must load nothing from the layers above.
"""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from mixagent.trajectories import collection, worker
from mixagent.trajectories.explorers import make_explorer, parse_explorers
ex = make_explorer("random_walk")
parse_explorers(["random_walk@1", "uniform:alpha=2@1"])
from mixagent.errors import ConfigError
try:  # a policy explorer needs the policies layer's factory: an error, not an import
    make_explorer("baseline:uniform")
except ConfigError:
    pass
above = sorted(m for m in sys.modules if m.split(".")[:2] in (["mixagent", "policies"],
               ["mixagent", "evaluation"], ["mixagent", "cpt"], ["mixagent", "cli"], ["mixagent", "demo"]))
print(",".join(above))
"""


def test_trajectories_load_nothing_from_the_layers_above():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"trajectories imported {out.stdout.strip()}"
