"""Package families: how installed modules are grouped into domains.

A domain should be a body of text with its own character — text processing reads differently
from networking, numpy from transformers — so that a mixture over domains is a meaningful choice.
The standard library is grouped by what its modules are for; third-party packages by the
ecosystem they belong to. Prose and code use the same groups, cut a little differently.
Standard-library modules not listed here fall into ``devtools`` (interpreter and tooling
internals, which is what the unlisted leftovers are).
"""

from __future__ import annotations

STDLIB_GROUPS: dict[str, tuple[str, ...]] = {
    "text": (
        "string", "re", "sre_compile", "sre_constants", "sre_parse", "textwrap", "difflib",
        "codecs", "encodings", "stringprep", "html", "xml", "json", "csv", "gettext", "locale",
        "shlex", "pprint", "reprlib", "configparser", "tomllib", "tokenize", "token", "keyword",
        "fnmatch", "netrc", "plistlib", "quopri", "base64", "uu", "rlcompleter", "_markupbase",
        "xdrlib",
    ),
    "data": (
        "collections", "_collections_abc", "dataclasses", "enum", "datetime", "_strptime",
        "calendar", "zoneinfo", "decimal", "_pydecimal", "fractions", "numbers", "statistics",
        "random", "heapq", "bisect", "sqlite3", "pickle", "_compat_pickle", "pickletools",
        "copyreg", "shelve", "dbm", "copy", "functools", "operator", "typing", "types", "weakref",
        "_weakrefset", "uuid", "ipaddress", "struct", "hashlib", "hmac", "secrets", "graphlib",
        "colorsys", "abc", "_py_abc", "contextlib",
    ),
    "system": (
        "os", "posixpath", "ntpath", "genericpath", "nturl2path", "stat", "shutil", "pathlib",
        "subprocess", "signal", "tempfile", "glob", "filecmp", "fileinput", "io", "_pyio",
        "zipfile", "zipimport", "zipapp", "tarfile", "gzip", "bz2", "lzma", "_compression",
        "logging", "platform", "sysconfig", "site", "getpass", "pty", "tty", "curses", "socket",
        "ssl", "ctypes", "venv", "ensurepip", "crypt", "pipes", "wave", "aifc", "sunau", "chunk",
        "sndhdr", "imghdr", "mailcap", "_osx_support", "_aix_support", "_bootsubprocess",
    ),
    "concurrency": (
        "asyncio", "asyncore", "asynchat", "concurrent", "multiprocessing", "threading",
        "_threading_local", "queue", "selectors", "sched", "contextvars",
    ),
    "net": (
        "email", "http", "urllib", "smtplib", "smtpd", "ftplib", "imaplib", "poplib", "nntplib",
        "telnetlib", "xmlrpc", "wsgiref", "mailbox", "mimetypes", "socketserver", "webbrowser",
        "cgi", "cgitb",
    ),
    "devtools": (
        "unittest", "doctest", "pdb", "bdb", "inspect", "ast", "dis", "opcode", "trace",
        "traceback", "linecache", "profile", "cProfile", "pstats", "timeit", "pydoc", "importlib",
        "pkgutil", "modulefinder", "runpy", "py_compile", "compileall", "codeop", "code",
        "argparse", "optparse", "getopt", "warnings", "symtable", "tabnanny", "pyclbr",
        "lib2to3", "distutils", "idlelib", "tkinter", "turtle", "turtledemo", "cmd", "imp",
        "__future__", "tracemalloc",
    ),
}

# Never text for prose/code: a big data literal (pydoc topics has its own domain), an easter egg.
STDLIB_EXCLUDED = frozenset({"pydoc_data", "this", "antigravity", "__hello__", "__phello__"})

_GROUP_OF = {mod: group for group, mods in STDLIB_GROUPS.items() for mod in mods}


def stdlib_group(package: str) -> str:
    """The group of a top-level stdlib module (``"tests"`` for the ``test`` package)."""
    if package == "test":
        return "tests"
    return _GROUP_OF.get(package, "devtools")


# Third-party families, by top-level import name. Only mixagent's own dependencies (direct or
# pulled in by them) are named; sympy and mpmath are the math field's and appear nowhere else.
NUMERIC_LIBS = ("numpy", "scipy", "pandas", "sklearn", "networkx", "matplotlib", "pyarrow")
ML_LIBS = (
    "torch", "transformers", "datasets", "tokenizers", "accelerate", "huggingface_hub",
    "safetensors", "gymnasium", "stable_baselines3",
)
TOOLING_LIBS = (
    "ray", "pydantic", "typer", "click", "rich", "tqdm", "yaml", "jinja2", "_pytest",
    "hypothesis", "requests", "urllib3", "aiohttp", "fsspec", "filelock", "packaging",
    "pygments", "markdown_it", "dateutil", "pyparsing", "joblib",
)
MATH_LIBS = ("sympy", "mpmath")

# Held out of every domain, for the built-in benchmarks (:mod:`.benchmarks`): packages that are
# installed with mixagent's dependencies (torchgen ships inside the torch wheel; setuptools is a
# torch requirement; distlib and platformdirs come with virtualenv, a ray[default] requirement;
# psutil with accelerate; protobuf's ``google``, opencensus, smart_open and virtualenv with
# ray[default]; dill with datasets; attrs and jsonschema with ray) but named in no family above,
# so no domain of any size can sample them. Code completion reads the first group's source,
# the cloze task the second group's docstrings; the two groups share no package either.
CODE_BENCHMARK_LIBS = ("torchgen", "setuptools", "distlib", "platformdirs", "psutil")
PROSE_BENCHMARK_LIBS = ("google", "virtualenv", "opencensus", "smart_open", "dill", "attr", "jsonschema")
# The output-prediction task reads unittest suites (the stdlib's test style) of packages no domain
# reads: regex (a transformers requirement) ships its suite, ``regex/tests/test_regex.py``. Not
# multiprocess (a datasets requirement): its suite is a copy of the stdlib's, which the code
# field's ``stdlib-tests`` domain samples, so the overlap check would drop it anyway.
CODE_OUTPUT_BENCHMARK_LIBS = ("regex",)

_DOMAIN_LIBS = frozenset((*NUMERIC_LIBS, *ML_LIBS, *TOOLING_LIBS, *MATH_LIBS))
_BENCHMARK_GROUPS = (CODE_BENCHMARK_LIBS, PROSE_BENCHMARK_LIBS, CODE_OUTPUT_BENCHMARK_LIBS)
if any(_DOMAIN_LIBS & set(g) for g in _BENCHMARK_GROUPS) or len(
    {p for g in _BENCHMARK_GROUPS for p in g}
) != sum(len(g) for g in _BENCHMARK_GROUPS):  # pragma: no cover - a tripwire for whoever edits the lists above
    raise RuntimeError("a benchmark package is also a domain package, or in two benchmarks (families.py)")
