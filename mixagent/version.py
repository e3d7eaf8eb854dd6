"""The package version, in a module of its own at the bottom of the layers.

``mixagent/__init__.py`` registers the environments when imported, so a low layer that read
the version from the package (``from mixagent import __version__``) would import the
environment layer above it; every layer reads it from here instead.
"""

__version__ = "0.1.0"
