"""Pod security and least privilege, on the real control plane.

Every pod kubeinfer makes runs in namespaces that enforce the ``restricted`` Pod Security
Standard (``pod-security.kubernetes.io/enforce: restricted``; the API server's PodSecurity
admission refuses any pod that is not: seccomp RuntimeDefault, all capabilities dropped,
runAsNonRoot, no privilege escalation -- plus a read-only root filesystem, which the
profile does not demand and the renders set). The operator's pod comes from the Helm chart
(``helm template``, applied as a user would); the runtime and router pods from the
Deployments the operator renders for InferenceModels and an InferenceEnsemble. kwok nodes
then run them (no containers, but admission has happened: a refused pod never exists).

The chart's RBAC: the operator runs as a real process with a token of the chart's
ServiceAccount, so the chart's rules are all it has. The API server's audit log records
that ServiceAccount's requests (``e2e/cluster/audit-policy.yaml``); after a scenario that
walks every path of the operator (models, an ensemble, a ConfigMap and an HPA made and
removed, an invalid spec reported as an Event) the test derives from the log what the
operator used -- and fails for every granted verb nobody used, and for every request the
rules refused. ``update`` on the owners' ``finalizers`` never shows as a request (the
OwnerReferencesPermissionEnforcement admission checks it when an object names its owner
with ``blockOwnerDeletion``); it is proven by removing it and watching the apply fail.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from e2e.conftest import CLUSTER_DIR
from e2e.test_operator import REPO, Operator, _helm, _sa_kubeconfig, condition, get, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

#: audit-policy.yaml records the requests of this namespace's ServiceAccounts
RBAC_NS = "kubeinfer-rbac"
RELEASE = "kubeinfer-rbac"  # contains the chart's name: the fullname (and the SA) is the release name
ACCOUNT = f"system:serviceaccount:{RBAC_NS}:{RELEASE}"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}
PIPELINE = REPO / "examples/manifests/digits-pipeline.yaml"
WAIT = 120
#: refused on purpose: the chart grants ServiceMonitors only with monitoring.perModelServiceMonitors
#: (off by default), and the operator then treats a 403 as "there cannot be one"
REFUSED_ON_PURPOSE = {("monitoring.coreos.com", "servicemonitors", "get")}
FINALIZERS = {("kubeinfer.dev", "inferencemodels/finalizers", "update"),
              ("kubeinfer.dev", "inferenceensembles/finalizers", "update")}


def restricted_namespace(cluster, name: str) -> None:
    doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": RESTRICTED}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))
    wait_for(f"default ServiceAccount in {name}",
             lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0)


def apply(cluster, ns: str, *objs: dict) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}))


def failed_creates(cluster, ns: str) -> list[str]:
    evs = get(cluster, "events", "-n", ns, "--field-selector", "reason=FailedCreate") or {"items": []}
    return [e.get("message", "") for e in evs["items"]]


def pods_of(cluster, ns: str, deployment: dict) -> list[dict]:
    sel = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
    pods = get(cluster, "pods", "-n", ns, "-l", sel) or {"items": []}
    return [p for p in pods["items"] if p["status"].get("phase") == "Running"]


def all_pods_admitted(cluster, ns: str) -> list[dict]:
    """Every Deployment in ``ns`` has all its replicas as Running pods; returns the pods."""
    def probe():
        deps = (get(cluster, "deployments", "-n", ns) or {"items": []})["items"]
        pods = [pods_of(cluster, ns, d) for d in deps]
        ok = deps and all(len(p) == d["spec"]["replicas"] for d, p in zip(deps, pods))
        return [p for ps in pods for p in ps] if ok else None
    pods = wait_for(f"every Deployment's pods Running in {ns} (FailedCreate: {failed_creates(cluster, ns)})",
                    probe, timeout=WAIT)
    assert failed_creates(cluster, ns) == []
    return pods


def assert_hardened(pod: dict) -> None:
    spec = pod["spec"]
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["securityContext"]["runAsNonRoot"] is True
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c["securityContext"]
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), c["name"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, c["name"]


@pytest.fixture(scope="module")
def chart(kube_cluster, metrics_bins) -> Iterator[list[dict]]:
    """The whole chart, rendered by helm and applied into a restricted namespace; KEDA's
    CRDs too (no KEDA controller: the operator's ScaledObjects just exist), so the chart's
    default KEDA rules are exercised."""
    c = kube_cluster
    c.kubectl("apply", "--server-side", "-f", str(metrics_bins.parent / "crds"))
    c.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    for crd in ("inferencemodels", "inferenceensembles"):
        c.kubectl("wait", "--for=condition=Established", f"crd/{crd}.kubeinfer.dev", "--timeout=60s")
    restricted_namespace(c, RBAC_NS)
    rendered = subprocess.run(
        [_helm(), "template", RELEASE, str(REPO / "charts/kubeinfer"), "-n", RBAC_NS],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    c.kubectl("apply", "-n", RBAC_NS, "-f", "-", input=rendered)
    yield [d for d in yaml.safe_load_all(rendered) if d]
    c.kubectl("delete", "-n", RBAC_NS, "-f", "-", "--wait=false", input=rendered, check=False)
    c.kubectl("delete", "namespace", RBAC_NS, "--wait=false", check=False)


def test_restricted_namespace_refuses_a_pod_without_hardening(kube_cluster, chart):
    """The control: the namespace really enforces the profile."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain"},
           "spec": {"containers": [{"name": "c", "image": "registry.local/plain:1"}]}}
    proc = kube_cluster.kubectl("apply", "-n", RBAC_NS, "-f", "-", input=json.dumps(pod), check=False)
    assert proc.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in proc.stderr, proc.stderr
    for words in ("allowPrivilegeEscalation != false", "unrestricted capabilities", "runAsNonRoot != true",
                  "seccompProfile"):
        assert words in proc.stderr, (words, proc.stderr)


def test_operator_pod_from_the_chart_is_admitted(kube_cluster, chart):
    (dep,) = [d for d in chart if d["kind"] == "Deployment"]
    (pod,) = wait_for("the operator's pod Running", lambda: pods_of(kube_cluster, RBAC_NS, dep), timeout=WAIT)
    assert failed_creates(kube_cluster, RBAC_NS) == []
    spec = pod["spec"]
    assert spec["serviceAccountName"] == RELEASE
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["securityContext"]["runAsNonRoot"] is True
    (c,) = spec["containers"]
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}


def _audit(cluster) -> list[dict]:
    path = subprocess.run(["bash", str(CLUSTER_DIR / "cluster.sh"), "audit-log"], env={**cluster.env,
                          "KUBEINFER_CLUSTER_NAME": cluster.name}, capture_output=True, text=True,
                          check=True).stdout.strip()
    events = []
    for line in Path(path).read_text().splitlines():
        e = json.loads(line)
        # a watch still open has only its ResponseStarted event so far
        if e.get("user", {}).get("username") == ACCOUNT and e.get("stage") in ("ResponseStarted", "ResponseComplete"):
            events.append(e)
    return events


def _granted(chart: list[dict]) -> set[tuple[str, str, str]]:
    out = set()
    for d in chart:
        if d["kind"] != "ClusterRole":
            continue
        for rule in d["rules"]:
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        out.add((g, r, v))
    return out


def _used(events: list[dict], probes: set[str]) -> tuple[set[tuple[str, str, str]], set[tuple[str, str, str]]]:
    """(what the operator's requests needed, what was refused) from its audit events.
    A server-side apply that created its object (201) needed ``create`` besides ``patch``.
    Refusals of the objects named in ``probes`` (applied while a rule was removed) do not count."""
    used, refused = set(), set()
    for e in events:
        ref = e.get("objectRef")
        if not ref:
            continue  # discovery, /version: open to every authenticated user
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        key = (ref.get("apiGroup", ""), resource, e["verb"])
        code = e.get("responseStatus", {}).get("code")
        if code == 403:
            if ref.get("name") not in probes:
                refused.add(key)
            continue
        used.add(key)
        if e["verb"] == "patch" and code == 201:
            used.add((key[0], key[1], "create"))
    return used, refused


def test_runtime_and_router_pods_are_admitted_and_rbac_is_what_the_operator_uses(
        kube_cluster, chart, tmp_path):
    c = kube_cluster
    op = Operator(c, _sa_kubeconfig(c, tmp_path / "kubeconfig", RELEASE, RBAC_NS), tmp_path / "operator.log")
    op.start()
    ns = f"psa-{uuid.uuid4().hex[:6]}"
    try:
        restricted_namespace(c, ns)
        docs = [d for d in yaml.safe_load_all(PIPELINE.read_text()) if d]
        # two more models that own everything a model can own: a ConfigMap and an HPA, and
        # a KEDA ScaledObject (the default autoscaler)
        extra = {"apiVersion": "kubeinfer.dev/v1alpha1", "kind": "InferenceModel", "metadata": {"name": "extra"},
                 "spec": {"model": {"uri": "s3://b/m", "config": {"max_batch_size": 8}},
                          "autoscaling": {"autoscaler": "hpa", "minReplicas": 1, "maxReplicas": 3}}}
        scaled = {**extra, "metadata": {"name": "extra-keda"},
                  "spec": {"model": {"uri": "s3://b/m"}, "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}}
        apply(c, ns, *docs, extra, scaled)
        wait_for("InferenceEnsemble Ready", lambda: condition(
            get(c, "inferenceensemble", "digits-pipeline", "-n", ns), "Ready").get("status") == "True", timeout=WAIT)
        wait_for("HPA of 'extra'", lambda: get(c, "hpa", "extra", "-n", ns), timeout=WAIT)
        wait_for("ScaledObject of 'extra-keda'", lambda: get(c, "scaledobject", "extra-keda", "-n", ns), timeout=WAIT)
        pods = all_pods_admitted(c, ns)
        routers = [p for p in pods if p["spec"]["containers"][0]["command"][:2] == ["kubeinfer", "route"]]
        runtimes = [p for p in pods if p["spec"]["containers"][0]["command"][:2] == ["kubeinfer", "serve"]]
        assert len(routers) == 2 and len(runtimes) >= 4, [p["metadata"]["name"] for p in pods]
        for pod in pods:
            assert_hardened(pod)

        # what is no longer wanted is deleted: the ConfigMap and the HPA
        c.kubectl("patch", "im", "extra", "-n", ns, "--type", "json", "-p", json.dumps(
            [{"op": "remove", "path": "/spec/model/config"}, {"op": "remove", "path": "/spec/autoscaling"}]))
        c.kubectl("patch", "im", "extra-keda", "-n", ns, "--type", "json", "-p", json.dumps(
            [{"op": "remove", "path": "/spec/autoscaling"}]))
        wait_for("HPA, ScaledObject and ConfigMap deleted", lambda: get(c, "hpa", "extra", "-n", ns) is None
                 and get(c, "scaledobject", "extra-keda", "-n", ns) is None
                 and not [m for m in (get(c, "configmaps", "-n", ns) or {"items": []})["items"]
                          if m["metadata"]["name"].startswith("extra")], timeout=WAIT)
        # a spec the API server accepts but the operator cannot render: an Event
        bad = {"apiVersion": "kubeinfer.dev/v1alpha1", "kind": "InferenceModel", "metadata": {"name": "bad"},
               "spec": {"model": {"uri": "s3://b/m", "config": {
                   "max_batch_size": 2, "dynamic_batching": {"preferred_batch_size": [64]}}}}}
        apply(c, ns, bad)
        wait_for("InvalidSpec event", lambda: [e for e in (get(c, "events", "-n", ns) or {"items": []})["items"]
                                               if e.get("reason") == "InvalidSpec"], timeout=WAIT)

        # update on the owners' finalizers: without it, an object naming its owner with
        # blockOwnerDeletion is refused at admission
        role = get(c, "clusterrole", RELEASE)
        kept = [r for r in role["rules"] if not any(x.endswith("/finalizers") for x in r["resources"])]
        assert len(kept) == len(role["rules"]) - 1
        c.kubectl("patch", "clusterrole", RELEASE, "--type", "json",
                  "-p", json.dumps([{"op": "replace", "path": "/rules", "value": kept}]))
        try:
            probe = {**extra, "metadata": {"name": "probe"}, "spec": {"model": {"uri": "s3://b/m"}}}
            apply(c, ns, probe)
            im = wait_for("apply refused without finalizers", lambda: (lambda o: o if condition(o, "Ready").get(
                "reason") == "ApplyRejected" else None)(get(c, "im", "probe", "-n", ns)), timeout=WAIT)
            assert "blockOwnerDeletion" in condition(im, "Ready")["message"], condition(im, "Ready")
        finally:
            c.kubectl("patch", "clusterrole", RELEASE, "--type", "json",
                      "-p", json.dumps([{"op": "replace", "path": "/rules", "value": role["rules"]}]))
        c.kubectl("patch", "im", "probe", "-n", ns, "--type", "merge", "-p", json.dumps({"spec": {"replicas": 2}}))
        wait_for("'probe' Ready once the rule is back", lambda: condition(
            get(c, "im", "probe", "-n", ns), "Ready").get("status") == "True", timeout=WAIT)

        # patch on the owners themselves: kopf writes its progress annotation only while a
        # handler is retried (a handler that succeeds or fails for good leaves nothing to
        # write). Without the status rule the status write is refused: a temporary
        # failure, retried by kopf, which records the retry on the object
        status_rule = [r for r in role["rules"] if "inferencemodels/status" in r["resources"]]
        assert len(status_rule) == 1
        c.kubectl("patch", "clusterrole", RELEASE, "--type", "json", "-p", json.dumps(
            [{"op": "replace", "path": "/rules", "value": [r for r in role["rules"] if r not in status_rule]}]))
        retry_ie = next(d for d in docs if d["kind"] == "InferenceEnsemble")
        retry_ie = {**retry_ie, "metadata": {"name": "retry-ie"}}
        try:
            apply(c, ns, {**extra, "metadata": {"name": "retry"}, "spec": {"model": {"uri": "s3://b/m"}}}, retry_ie)
            for kind, name, key in (("im", "retry", "kubeinfer.dev/model_changed"),
                                    ("ie", "retry-ie", "kubeinfer.dev/ensemble_changed")):
                wait_for(f"kopf's retry recorded on {name}", lambda k=kind, n=name, a=key: a in (
                    (get(c, k, n, "-n", ns) or {}).get("metadata", {}).get("annotations") or {}), timeout=WAIT)
        finally:
            c.kubectl("patch", "clusterrole", RELEASE, "--type", "json",
                      "-p", json.dumps([{"op": "replace", "path": "/rules", "value": role["rules"]}]))
        wait_for("'retry' Ready once the rule is back", lambda: condition(
            get(c, "im", "retry", "-n", ns), "Ready").get("status") == "True", timeout=WAIT)

        used, refused = _used(_audit(c), {"probe", "retry", "retry-ie"})
        granted = _granted(chart)
        unused = granted - used - FINALIZERS
        assert not unused, f"granted but never used by the operator: {sorted(unused)}\nused: {sorted(used)}"
        assert refused <= REFUSED_ON_PURPOSE, f"refused: {sorted(refused - REFUSED_ON_PURPOSE)}\n{op.tail()}"
    finally:
        op.stop()
        c.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        print("---- operator log (tail)\n" + op.tail())
