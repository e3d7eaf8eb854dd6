"""The built-in corpus: a demo data directory made only from text already on the machine.

So that everything in mixagent runs offline on a fresh machine, ``mixagent data builtin`` builds a
three-field data directory without downloading anything:

- ``prose`` (source field): Python's documentation topics and the docstrings of the standard
  library and installed packages (:mod:`.prose`);
- ``code`` (target field): Python source with docstrings removed (:mod:`.code`);
- ``math`` (target field): sympy/mpmath docstrings and doctests plus generated word problems with
  worked solutions (:mod:`.mathtext`, :mod:`.problems`), and a held-out exact-match task set;

and benchmarks from packages no domain reads (:mod:`.benchmarks`): two for code, one for prose.

Files are found and parsed, never imported (:mod:`.sources`). Sizes ``tiny`` (tests), ``small``
(default) and ``full`` are presets in :mod:`.sizes`; building and reuse live in :mod:`.build`.
"""

from mixagent.data.builtin.benchmarks import (
    BENCHMARKS_VERSION,
    CODE_BENCHMARK,
    CODE_OUTPUT_BENCHMARK,
    PROSE_BENCHMARK,
)
from mixagent.data.builtin.build import (
    BUILTIN_VERSION,
    TASK_NAME,
    BuiltinPlan,
    build_builtin,
    builtin_benchmarks_fingerprint,
    builtin_content_hash,
    default_builtin_dir,
    plan_builtin,
)
from mixagent.data.builtin.sizes import SIZES, SizeSpec, size_spec

__all__ = [
    "BENCHMARKS_VERSION",
    "BUILTIN_VERSION",
    "CODE_BENCHMARK",
    "CODE_OUTPUT_BENCHMARK",
    "PROSE_BENCHMARK",
    "SIZES",
    "TASK_NAME",
    "BuiltinPlan",
    "SizeSpec",
    "build_builtin",
    "builtin_benchmarks_fingerprint",
    "builtin_content_hash",
    "default_builtin_dir",
    "plan_builtin",
    "size_spec",
]
