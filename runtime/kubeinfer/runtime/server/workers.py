"""``kubeinfer serve --workers N``: a parent process and N serving processes in one pod.

The parent loads nothing and serves nothing. It starts N workers (``multiprocessing``
spawn: fresh interpreters running ``run.serve_worker``); each loads the model, runs its own
batcher and warm-up and binds every port with ``SO_REUSEPORT``, so the kernel spreads new
connections over the workers. SIGTERM or SIGINT: the parent marks the pod stopping (every
worker turns unready at once, see ``server.pod``) and forwards SIGTERM; each worker drains
as a single server does and logs its own final count; the parent waits for all, logs the
pod's total and exits 0 only if every worker did. Nothing is restarted: a worker that
exits on its own (crashed, killed, failed to load) makes the parent stop the others and
exit 1, so Kubernetes restarts the pod.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import tempfile
from multiprocessing.connection import wait

from kubeinfer.runtime.server.pod import PodState
from kubeinfer.runtime.server.process import run_main, setup_logging
from kubeinfer.runtime.settings import RuntimeSettings

log = logging.getLogger("kubeinfer.serve")

#: each worker's index, for the model and for logs
WORKER_ENV = "KUBEINFER_WORKER"


def _die_with_parent() -> None:
    """SIGTERM this worker if the parent dies (Linux), so no worker outlives its pod."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def worker_main(settings: RuntimeSettings, state: PodState, index: int, parent: int) -> None:
    _die_with_parent()
    if os.getppid() != parent:
        sys.exit(1)  # the parent is already gone
    os.environ[WORKER_ENV] = str(index)
    from kubeinfer.runtime.server.run import serve_worker

    tag = f"[worker {index} pid {os.getpid()}]"
    sys.exit(run_main(serve_worker(settings, state, index), settings.log_level, "serve", tag))


def run_workers(settings: RuntimeSettings) -> int:
    setup_logging(settings.log_level, "[pod]")
    n = settings.workers
    if settings.http_port == 0:
        log.error("cannot serve with %d workers on HTTP port 0: they must share one port", n)
        return 1
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="kubeinfer-pod-") as directory:
        state = PodState(ctx, n, directory)
        procs = [
            ctx.Process(target=worker_main, args=(settings, state, i, os.getpid()), name=f"worker-{i}")
            for i in range(n)
        ]

        def stop(*_args) -> None:
            state.set_stopping()
            for p in procs:
                if p.pid is not None and p.exitcode is None:
                    os.kill(p.pid, signal.SIGTERM)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stop)
        for p in procs:
            p.start()
        log.info("started %d workers: pids %s", n, ", ".join(str(p.pid) for p in procs))
        if state.stopping():
            stop()  # a signal came while the workers were being started
        return _wait(procs, state, stop)


def _wait(procs, state: PodState, stop) -> int:
    alive = {p.sentinel: (i, p) for i, p in enumerate(procs)}
    failed = False
    while alive:
        for sentinel in wait(list(alive)):
            i, p = alive.pop(sentinel)
            p.join()
            if not state.stopping():
                log.error(
                    "worker %d (pid %d) exited with status %s on its own; stopping the pod",
                    i, p.pid, p.exitcode,
                )
                failed = True
                stop()
            elif p.exitcode != 0:
                log.error("worker %d (pid %d) exited with status %s", i, p.pid, p.exitcode)
                failed = True
    succeeded = sum(state.final(i)[0] for i in range(len(procs)))
    fails = sum(state.final(i)[1] for i in range(len(procs)))
    log.info(
        "stopped: %d workers, %d requests succeeded, %d failed%s",
        len(procs), succeeded, fails, "; exiting 1" if failed else "",
    )
    return 1 if failed else 0
