"""Scheduling: one batching engine (queue, futures, instances, timer, draining) composed
with a pure policy and an assembler per kind: dynamic batching and sequence batching."""

from kubeinfer.runtime.batching.assembler import Assembler, Flight
from kubeinfer.runtime.batching.batcher import DynamicAssembler, DynamicBatcher
from kubeinfer.runtime.batching.engine import BatchingEngine
from kubeinfer.runtime.batching.interface import ExecuteFn, Scheduler, StatsSink
from kubeinfer.runtime.batching.policy import BatchPolicy, Decision, Pending, shape_key

__all__ = [
    "Assembler",
    "BatchPolicy",
    "BatchingEngine",
    "Decision",
    "DynamicAssembler",
    "DynamicBatcher",
    "ExecuteFn",
    "Flight",
    "Pending",
    "Scheduler",
    "StatsSink",
    "shape_key",
]
