"""How many serving processes a runtime pod runs (``kubeinfer serve --workers``).

``spec.runtime.workers`` when set. Unset: a GPU model runs one (N processes would each
create a CUDA context and hold the weights in GPU memory); a CPU model one per whole CPU of
the runtime container's CPU limit (its CPU request when it has no limit), at least 1 and at
most :data:`MAX_DEFAULT_WORKERS` — a CPU model is bound by one core of Python per process
long before the model is. No CPU quantity, or less than one CPU, gives 1.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from kubeinfer.operator.api.v1alpha1 import RuntimeSpec
from kubeinfer.operator.render.common import InvalidSpec

WORKERS_ENV = "KUBEINFER_WORKERS"
MAX_DEFAULT_WORKERS = 8

_NUMBER = re.compile(r"^\+?([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(.*)$")
_DECIMAL_EXPONENTS = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_EXPONENTS = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_EXPONENT = re.compile(r"^[eE][+-]?[0-9]+$")


def quantity(value: int | str) -> Decimal:
    """The value of a non-negative Kubernetes quantity: ``"500m"`` -> 0.5, ``"2"`` -> 2,
    ``"1.5"`` -> 1.5, ``"1Ki"`` -> 1024, ``"1e3"`` -> 1000. Raises ValueError for anything else."""
    if isinstance(value, int):
        return Decimal(value)
    m = _NUMBER.match(value)
    if m is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    number, suffix = Decimal(m.group(1)), m.group(2)
    if suffix in _DECIMAL_EXPONENTS:
        return number.scaleb(_DECIMAL_EXPONENTS[suffix])
    if suffix in _BINARY_EXPONENTS:
        return number * 2 ** _BINARY_EXPONENTS[suffix]
    if _EXPONENT.match(suffix):
        try:
            return number.scaleb(int(suffix[1:]))
        except (InvalidOperation, OverflowError):
            pass
    raise ValueError(f"{value!r} is not a Kubernetes quantity")


def default_workers(rt: RuntimeSpec) -> int:
    """The number of serving processes when ``rt.workers`` is unset."""
    if rt.uses_gpus:
        return 1
    limits, requests = rt.resources.limits, rt.resources.requests
    field, cpu = ("limits", limits["cpu"]) if "cpu" in limits else ("requests", requests.get("cpu"))
    if cpu is None:
        return 1
    try:
        cores = quantity(cpu)
    except ValueError as exc:
        raise InvalidSpec(f"spec.runtime.resources.{field}.cpu: {exc}") from None
    if cores >= MAX_DEFAULT_WORKERS:
        return MAX_DEFAULT_WORKERS
    return max(1, int(cores))  # int() floors a non-negative Decimal


def serving_processes(rt: RuntimeSpec) -> int:
    """Serving processes per pod: ``rt.workers``, or :func:`default_workers`. (The spec's
    validation has refused ``workers > 1`` on a GPU model.)"""
    return rt.workers if rt.workers is not None else default_workers(rt)
