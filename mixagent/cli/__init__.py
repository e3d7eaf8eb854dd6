"""The ``mixagent`` command line: one sub-command per workflow stage, each a thin layer over the library."""
