"""Reconcile: parse an InferenceModel (InferenceEnsemble), apply what it owns, prune the rest, write status."""

from kubeinfer.operator.reconcile.ensemble import EnsembleReconciler, referenced_models
from kubeinfer.operator.reconcile.reconciler import Failure, Reconciler, parse

__all__ = ["EnsembleReconciler", "Failure", "Reconciler", "parse", "referenced_models"]
