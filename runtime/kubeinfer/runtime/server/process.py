"""The process of a server command: logging, the event loop, a ``ConfigError`` as exit 1.

``kubeinfer serve`` and ``kubeinfer route`` (and each worker of ``serve --workers N``) run
their coroutine through ``run_main``; nothing here knows what the coroutine serves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from kubeinfer.runtime.errors import ConfigError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def run_async(main: Coroutine[Any, Any, int]) -> int:
    """Run the server's coroutine on uvloop (when installed), as uvicorn would by itself."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def setup_logging(log_level: str, tag: str = "") -> None:
    """Log lines to stderr; ``tag`` (e.g. ``[worker 1]``) precedes every message."""
    fmt = LOG_FORMAT.replace("%(message)s", f"{tag} %(message)s") if tag else LOG_FORMAT
    logging.basicConfig(level=log_level.upper(), format=fmt, force=True)


def run_main(main: Coroutine[Any, Any, int], log_level: str, what: str, tag: str = "") -> int:
    """The command's process: logging, the event loop, a ConfigError as exit status 1."""
    setup_logging(log_level, tag)
    try:
        return run_async(main)
    except ConfigError as exc:
        logging.getLogger("kubeinfer").error("cannot %s: %s", what, exc)
        return 1
