"""The only package that talks to the Kubernetes API (through lightkube)."""

from kubeinfer.operator.k8s.api import ApiFailure, KubeApi

__all__ = ["ApiFailure", "KubeApi"]
