"""Helpers for the operator's fast tests: parsed example targets, schema checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from kubeinfer.operator.api.v1alpha1 import InferenceModelSpec
from kubeinfer.operator.render import RenderOptions, Target

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "manifests"
K8S_VERSION = "1.36.0"


def example_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def target_of(doc: dict[str, Any], namespace: str = "models", uid: str = "1234-abcd") -> Target:
    return Target(
        name=doc["metadata"]["name"],
        namespace=doc["metadata"].get("namespace", namespace),
        uid=uid,
        spec=InferenceModelSpec.model_validate(doc["spec"]),
    )


def make_target(name: str = "m", **spec: Any) -> Target:
    spec.setdefault("model", {"uri": "https://example.com/m.tar.gz"})
    return Target(name=name, namespace="ns", uid="uid-1", spec=InferenceModelSpec.model_validate(spec))


def assert_k8s_valid(manifest: dict[str, Any]) -> None:
    """Strict validation against the official schemas (unknown fields are errors)."""
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
