"""Smoke tests of the e2e control plane itself: the controllers, the scheduler, kwok's
fake nodes, garbage collection and server-side apply all work for real."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

pytestmark = pytest.mark.e2e

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 90, interval: float = 0.5) -> T:
    """Poll ``probe`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def get_json(cluster, *args: str) -> dict:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


@pytest.fixture
def namespace(kube_cluster) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl("create", "namespace", name)
    # Pods need the namespace's default ServiceAccount, made by the controller-manager.
    wait_for(
        "default ServiceAccount",
        lambda: kube_cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
    )
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def deployment(name: str, replicas: int) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            # kwok pulls and runs nothing: any image name will do.
                            "image": "example.invalid/kubeinfer-e2e:0",
                            "ports": [{"containerPort": 8000}],
                        }
                    ],
                },
            },
        },
    }


def test_api_server_version_and_kwok_nodes(kube_cluster):
    version = json.loads(kube_cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.36.")
    assert kube_cluster.server.startswith("https://127.0.0.1:")
    nodes = get_json(kube_cluster, "nodes")["items"]
    assert len(nodes) >= 2
    for node in nodes:
        assert node["metadata"]["annotations"].get("kwok.x-k8s.io/node") == "fake"
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True"


def test_deployment_gets_replicaset_and_running_pods(kube_cluster, namespace):
    kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(deployment("web", 2)))

    def replicasets():
        items = get_json(kube_cluster, "replicasets", "-n", namespace, "-l", "app=web")["items"]
        return [rs for rs in items if rs["metadata"]["ownerReferences"][0]["name"] == "web"]

    (rs,) = wait_for("a ReplicaSet owned by the Deployment", replicasets)
    assert rs["spec"]["replicas"] == 2

    kwok_nodes = {
        n["metadata"]["name"]
        for n in get_json(kube_cluster, "nodes")["items"]
        if n["metadata"]["annotations"].get("kwok.x-k8s.io/node") == "fake"
    }

    def running_pods():
        pods = get_json(kube_cluster, "pods", "-n", namespace, "-l", "app=web")["items"]
        running = [p for p in pods if p["status"].get("phase") == "Running"]
        return running if len(running) == 2 else None

    pods = wait_for("2 Running pods", running_pods)
    for pod in pods:
        assert pod["metadata"]["ownerReferences"][0]["name"] == rs["metadata"]["name"]
        assert pod["spec"]["nodeName"] in kwok_nodes
        assert pod["status"].get("podIP"), "kwok assigns pod IPs"
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready.get("Ready") == "True"

    kube_cluster.kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=60s")
    dep = get_json(kube_cluster, "deployment", "web", "-n", namespace)
    assert dep["status"]["availableReplicas"] == 2


def test_garbage_collection_of_owned_objects(kube_cluster, namespace):
    kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(deployment("owner", 1)))
    dep = get_json(kube_cluster, "deployment", "owner", "-n", namespace)
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "owned",
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "owner",
                    "uid": dep["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {"k": "v"},
    }
    kube_cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(configmap))
    wait_for("the Deployment's pod", lambda: get_json(kube_cluster, "pods", "-n", namespace, "-l", "app=owner")["items"])

    kube_cluster.kubectl("delete", "deployment", "owner", "-n", namespace, "--wait=true", "--timeout=60s")

    def gone(what: str, *selector: str) -> bool:
        out = kube_cluster.kubectl("get", what, "-n", namespace, *selector, "-o", "name", "--ignore-not-found")
        return not out.stdout.strip()

    wait_for("the owned ConfigMap to be garbage-collected", lambda: gone("configmap/owned"))
    wait_for("the ReplicaSet to be garbage-collected", lambda: gone("replicasets", "-l", "app=owner"))
    wait_for("the pods to be garbage-collected", lambda: gone("pods", "-l", "app=owner"))


def test_server_side_apply(kube_cluster, namespace):
    def cm(value: str) -> str:
        return json.dumps(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"key": value}}
        )

    apply = ("apply", "--server-side", "-n", namespace, "-f", "-")
    kube_cluster.kubectl(*apply, "--field-manager=kubeinfer-a", input=cm("one"))
    kube_cluster.kubectl(*apply, "--field-manager=kubeinfer-a", input=cm("two"))
    obj = get_json(kube_cluster, "configmap", "ssa", "-n", namespace, "--show-managed-fields")
    assert obj["data"] == {"key": "two"}
    managers = {m["manager"]: m["operation"] for m in obj["metadata"]["managedFields"]}
    assert managers == {"kubeinfer-a": "Apply"}

    # A second manager claiming the same field conflicts, until it forces.
    conflict = kube_cluster.kubectl(*apply, "--field-manager=kubeinfer-b", input=cm("three"), check=False)
    assert conflict.returncode != 0
    assert "conflict" in conflict.stderr.lower()
    kube_cluster.kubectl(*apply, "--field-manager=kubeinfer-b", "--force-conflicts", input=cm("three"))
    obj = get_json(kube_cluster, "configmap", "ssa", "-n", namespace, "--show-managed-fields")
    assert obj["data"] == {"key": "three"}
    assert {m["manager"] for m in obj["metadata"]["managedFields"]} == {"kubeinfer-b"}
