"""The custom resources' API: pydantic models (the single source) and the CRD generator."""

from kubeinfer.operator.api.v1alpha1 import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    InferenceModelSpec,
    InferenceModelStatus,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "InferenceModelSpec",
    "InferenceModelStatus",
]
