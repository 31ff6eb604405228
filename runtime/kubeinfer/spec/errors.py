"""The specification's errors; the root of the configuration side of the error taxonomy.

``kubeinfer.runtime.errors`` re-exports :class:`ConfigError` and ``kubeinfer.router.errors``
:class:`EnsembleError`, so the runtime's status mapping and every ``except ConfigError``
treat a problem found here and one found while loading a model alike.
"""

from __future__ import annotations

from pydantic import ValidationError


class ConfigError(Exception):
    """A model repository or configuration problem found at startup."""


class EnsembleError(ConfigError):
    """The ensemble definition is invalid (found while loading or at startup)."""


def validation_problems(exc: ValidationError) -> str:
    """pydantic's errors as ``field.path: message`` items joined by ``; ``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
    )
