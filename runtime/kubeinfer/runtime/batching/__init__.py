"""Scheduling: the dynamic batcher (policy + queue + instance workers) and direct execution."""

from kubeinfer.runtime.batching.batcher import DynamicBatcher
from kubeinfer.runtime.batching.interface import ExecuteFn, Scheduler, StatsSink
from kubeinfer.runtime.batching.policy import BatchPolicy, Decision, Pending, shape_key

__all__ = [
    "BatchPolicy",
    "Decision",
    "DynamicBatcher",
    "ExecuteFn",
    "Pending",
    "Scheduler",
    "StatsSink",
    "shape_key",
]
