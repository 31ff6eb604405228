"""Reconcile: parse an InferenceModel, apply what it owns, prune the rest, write status."""

from kubeinfer.operator.reconcile.reconciler import Failure, Reconciler, parse

__all__ = ["Failure", "Reconciler", "parse"]
