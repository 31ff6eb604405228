"""The specification's errors; the root of the configuration side of the error taxonomy.

``kubeinfer.runtime.errors`` re-exports :class:`ConfigError` and ``kubeinfer.router.errors``
:class:`EnsembleError`, so the runtime's status mapping and every ``except ConfigError``
treat a problem found here and one found while loading a model alike.
"""

from __future__ import annotations


class ConfigError(Exception):
    """A model repository or configuration problem found at startup."""


class EnsembleError(ConfigError):
    """The ensemble definition is invalid (found while loading or at startup)."""
