"""Helpers for the operator's fast tests: parsed example targets, schema checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from kubeinfer.operator.api.v1alpha1 import InferenceEnsembleSpec, InferenceModelSpec
from kubeinfer.operator.render import EnsembleTarget, RenderOptions, ResolvedStep, Target

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "manifests"
K8S_VERSION = "1.36.0"


def example_docs(kind: str = "InferenceModel") -> list[dict[str, Any]]:
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == kind]
    return docs


def ensemble_target_of(doc: dict[str, Any], namespace: str = "models", uid: str = "uid-e") -> EnsembleTarget:
    """An ensemble target with every modelRef resolved as the reconciler would (the
    InferenceModel's Service; served name = the ref)."""
    spec = InferenceEnsembleSpec.model_validate(doc["spec"])
    ns = doc["metadata"].get("namespace", namespace)
    steps = tuple(
        ResolvedStep(s.name, s.model_ref, f"http://{s.model_ref}.{ns}.svc.cluster.local:8000")
        if s.model_ref else ResolvedStep(s.name, s.model_name or s.name, s.url or "")
        for s in spec.steps
    )
    return EnsembleTarget(name=doc["metadata"]["name"], namespace=ns, uid=uid, spec=spec, steps=steps)


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
