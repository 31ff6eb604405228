"""``InferenceModel`` and ``InferenceEnsemble`` (kubeinfer.dev/v1alpha1) as pydantic models:
the single source.

The operator parses a resource's ``spec`` into :class:`InferenceModelSpec` (or
:class:`InferenceEnsembleSpec`) once and works
on typed objects from then on; :mod:`kubeinfer.operator.api.crdgen` turns the same models
into the CRD's OpenAPI schema (descriptions become ``kubectl explain`` text) and adds the
CEL rules in :data:`CEL_RULES` (:data:`ENSEMBLE_CEL_RULES`) for what a schema alone cannot say.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from kubeinfer.operator.api.autoscaling import Autoscaling
from kubeinfer.operator.api.base import ApiModel

GROUP = "kubeinfer.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "InferenceModel"
PLURAL = "inferencemodels"
SINGULAR = "inferencemodel"
SHORT_NAMES = ["im"]

ENSEMBLE_KIND = "InferenceEnsemble"
ENSEMBLE_PLURAL = "inferenceensembles"
ENSEMBLE_SINGULAR = "inferenceensemble"
ENSEMBLE_SHORT_NAMES = ["ie"]

URI_SCHEMES = ("http", "https", "s3", "gs", "pvc")
# the same rule, in Python and in CEL, so a spec that passed the API server also parses here
URI_PATTERN = r"^((https?|s3|gs)://[^/\s]+(/\S*)?|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/\S*)?|/\S*)$"

IntOrString = Annotated[
    int | str, WithJsonSchema({"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]})
]
# a non-negative resource.Quantity (what controller-gen emits for one, without the sign):
# 500m, 2, 1.5Gi, 10G, 1e3 — not "two cores", "1.5 GB"
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
PERCENT_PATTERN = r"^[0-9]+%$"
GPU_RESOURCE = "nvidia.com/gpu"
MAX_WORKERS = 64  # what `kubeinfer serve --workers` accepts


def _int_or_string(pattern: str, what: str, example: str) -> Any:
    """An int-or-string whose string form must match ``pattern`` (checked here and by the
    API server, so a malformed value is refused at admission, never at apply)."""
    schema = {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}],
              "pattern": pattern, "description": f"{what}: {example}."}

    def check(value: int | str) -> int | str:
        if isinstance(value, int) and value < 0 or isinstance(value, str) and not re.match(pattern, value):
            raise ValueError(f"{value!r} is not {what} (e.g. {example})")
        return value

    return Annotated[int | str, AfterValidator(check), WithJsonSchema(schema)]


Quantity = _int_or_string(QUANTITY_PATTERN, "a Kubernetes quantity", "500m, 2, 512Mi, 10Gi")
IntOrPercent = _int_or_string(PERCENT_PATTERN, "a number of pods or a percentage of them", "1, 25%")
Quantities = dict[str, Quantity]


def _free_object(description: str) -> Any:
    """A Kubernetes object we pass through unchanged (validated by the API server later)."""
    return WithJsonSchema(
        {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "description": description}
    )


_Model = ApiModel


class ModelSource(_Model):
    """Where the model comes from and how it is configured."""

    uri: str = Field(min_length=1, max_length=2048)
    """Location of the model directory (Triton layout: config.pbtxt, <version>/model.onnx,
    labels.txt), as http(s):// (a file or a .tar/.tar.gz/.zip archive), s3://bucket/prefix,
    gs://bucket/prefix, pvc://<claim>/<path>, or an absolute path inside the runtime image."""
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$", max_length=128)
    """Name the model is served under (default: the resource's name)."""
    version: int | None = Field(default=None, ge=1)
    """Version to serve (default: what the model's version policy selects). A single
    model file fetched from the URI is placed under this version (default 1)."""
    format: Literal["onnx", "pytorch", "tensorrt", "python"] | None = None
    """Backend the model needs; fills the config's backend when the inline config has none."""
    config: Annotated[
        dict[str, Any] | None,
        _free_object(
            "Triton ModelConfig fields (snake_case, as config.pbtxt written as YAML: "
            "max_batch_size, input, output, dynamic_batching, instance_group, ...). "
            "Overrides the repository's config file when set."
        ),
    ] = None
    credentials_secret: str | None = Field(default=None, max_length=253)
    """Secret whose keys become environment variables of the fetch init container
    (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL)."""
    storage_size: Quantity | None = None
    """Size limit of the emptyDir the model is fetched into (e.g. 10Gi)."""

    @field_validator("uri")
    @classmethod
    def _uri(cls, uri: str) -> str:
        if not re.match(URI_PATTERN, uri):
            raise ValueError(
                "uri must be http(s)://host/..., s3://bucket/..., gs://bucket/..., "
                "pvc://<claim>/<path> or an absolute path"
            )
        return uri

    @property
    def scheme(self) -> str:
        m = re.match(r"^([a-z0-9]+)://", self.uri)
        return m.group(1) if m else "file"


class EnvVar(_Model):
    """An environment variable of the runtime container."""

    name: str = Field(min_length=1)
    """Name of the environment variable."""
    value: str | None = None
    """Value; $(VAR_NAME) references to earlier variables are expanded (core/v1 EnvVar)."""
    value_from: Annotated[dict[str, Any] | None, _free_object("Source for the value (core/v1 EnvVarSource).")] = None


class Toleration(_Model):
    """A core/v1 Toleration."""

    key: str | None = None
    """Taint key the toleration applies to; empty with operator Exists matches all taints."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists (any value) or Equal (the value below; the default)."""
    value: str | None = None
    """Taint value the toleration matches (with operator Equal)."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = None
    """With effect NoExecute: how long the pod stays bound after the taint appears
    (default: forever)."""


class Resources(_Model):
    """Compute resources of the runtime container (core/v1 ResourceRequirements)."""

    requests: Quantities = Field(default_factory=dict)
    """Resources reserved for the container (cpu, memory, ...), e.g. {cpu: 500m, memory: 1Gi}."""
    limits: Quantities = Field(default_factory=dict)
    """Most the container may use (cpu is throttled, memory over the limit is OOM-killed)."""


class RuntimeSpec(_Model):
    """The runtime container that serves the model."""

    image: str | None = None
    """Runtime image (default: the operator's configured image, same version as the operator)."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    """When the kubelet pulls the image (default: the operator's configured policy)."""
    resources: Resources = Field(default_factory=Resources)
    """CPU, memory (and other) requests and limits of the runtime container."""
    gpus: int = Field(default=0, ge=0)
    """NVIDIA GPUs per pod: sets the nvidia.com/gpu limit and tolerates the nvidia.com/gpu taint."""
    workers: int | None = Field(default=None, ge=1, le=MAX_WORKERS)
    """Serving processes per pod sharing the ports (kubeinfer serve --workers; each loads the
    model and holds its own memory). Default: one per whole CPU of the CPU limit (of the CPU
    request without a limit), at least 1 and at most 8. A GPU model runs one and cannot set more."""
    env: list[EnvVar] = Field(default_factory=list)
    """Extra environment variables of the runtime container (KUBEINFER_* settings too)."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels a pod's node must have (e.g. {nvidia.com/gpu.product: NVIDIA-A10})."""
    tolerations: list[Toleration] = Field(default_factory=list)
    """Taints the pods tolerate (the nvidia.com/gpu taint is tolerated when gpus > 0)."""
    affinity: Annotated[dict[str, Any] | None, _free_object("Pod affinity rules (core/v1 Affinity).")] = None
    service_account_name: str | None = None
    """ServiceAccount the pods run as (default: the namespace's default), e.g. for
    workload identity to read s3:// or gs:// models."""
    log_level: Literal["debug", "info", "warning", "error"] | None = None
    """Log level of the runtime (KUBEINFER_LOG_LEVEL; default info)."""
    shutdown_delay_seconds: int = Field(default=5, ge=0, le=300)
    """Seconds a pod keeps serving after SIGTERM with readiness already false, so that
    endpoints drain before it stops accepting requests."""
    drain_seconds: int = Field(default=30, ge=1, le=3600)
    """Seconds allowed for queued and in-flight requests to finish after the delay; the
    pod's terminationGracePeriodSeconds is shutdownDelaySeconds + drainSeconds."""
    startup_timeout_seconds: int = Field(default=600, ge=10, le=7200)
    """How long a pod may take to load and warm up the model before it is restarted."""

    @property
    def uses_gpus(self) -> bool:
        """The pods get NVIDIA GPUs (runtime.gpus, or an nvidia.com/gpu limit)."""
        return bool(self.gpus) or GPU_RESOURCE in self.resources.limits

    @field_validator("workers")
    @classmethod
    def _one_process_per_gpu_model(cls, workers: int | None, info: ValidationInfo) -> int | None:
        resources = info.data.get("resources")
        gpu_limit = resources is not None and GPU_RESOURCE in resources.limits
        if workers is not None and workers > 1 and (info.data.get("gpus") or gpu_limit):
            raise PydanticCustomError(
                "gpu_workers",
                "a GPU model runs one serving process ({workers} would each load the model onto the GPU); "
                "leave workers unset or set it to 1",
                {"workers": workers},
            )
        return workers


class Rollout(_Model):
    """How updates roll out and how much disruption is allowed."""

    max_surge: IntOrPercent = "25%"
    """Pods created above the desired count during a rolling update (Deployment maxSurge)."""
    max_unavailable: IntOrPercent = 0
    """Pods that may be unavailable during a rolling update (Deployment maxUnavailable);
    0 keeps full serving capacity while a new version starts."""
    pdb_max_unavailable: IntOrPercent = 1
    """maxUnavailable of the PodDisruptionBudget guarding voluntary evictions."""


class Monitoring(_Model):
    """Prometheus integration."""

    service_monitor: bool = False
    """Create a monitoring.coreos.com/v1 ServiceMonitor for this model's metrics port."""


class InferenceModelSpec(_Model):
    """Desired state of an InferenceModel: one model served by a Deployment of runtimes."""

    model: ModelSource
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    """The runtime pods: image, resources, GPUs, scheduling, environment, shutdown."""
    replicas: int = Field(default=1, ge=0)
    """Number of runtime pods when autoscaling is not set (the scale subresource's target).
    Ignored, and immutable, while autoscaling is set: the autoscaler owns the replicas."""
    autoscaling: Autoscaling | None = None
    """Scale on pending requests (KEDA or an HPA); unset: run spec.replicas pods."""
    rollout: Rollout = Field(default_factory=Rollout)
    """Rolling-update and disruption-budget settings."""
    monitoring: Monitoring = Field(default_factory=Monitoring)
    """Prometheus integration (a ServiceMonitor)."""

    @model_validator(mode="after")
    def _consistent(self) -> InferenceModelSpec:
        a = self.autoscaling
        if a is not None and a.min_replicas > a.max_replicas:
            raise ValueError(f"autoscaling.minReplicas ({a.min_replicas}) > maxReplicas ({a.max_replicas})")
        return self


class Condition(_Model):
    """A status condition (metav1.Condition)."""

    type: str
    """Ready (the model answers requests), Progressing (a rollout is under way) or
    Degraded (stuck rollout, failed pods, or a spec that cannot be served)."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: str
    """CamelCase reason (e.g. Available, ReplicasNotReady, InvalidSpec, NameClash)."""
    message: str = ""
    """What happened, for a human; names the field for a bad spec."""
    last_transition_time: str | None = None
    """When the status last changed (RFC 3339)."""
    observed_generation: int | None = None
    """metadata.generation this condition was computed from."""


class AutoscalerStatus(_Model):
    """The autoscaler as the operator last saw it (refreshed on every reconcile)."""

    model_config = ConfigDict(extra="allow")
    kind: Literal["keda", "hpa"]
    """The autoscaler in charge (spec.autoscaling.autoscaler)."""
    hpa_name: str
    """The HPA that scales the Deployment (keda-hpa-<name> for KEDA, <name> for hpa)."""
    current_replicas: int | None = None
    """Replicas the HPA last saw."""
    desired_replicas: int | None = None
    """Replicas the HPA last asked for."""
    current_pending_requests: str | None = None
    """The pending-request metric as the HPA last read it: average per replica (a quantity,
    e.g. 2500m = 2.5); unset while the HPA cannot read it."""
    last_scale_time: str | None = None
    """When the HPA last changed the replicas (RFC 3339)."""


class InferenceModelStatus(_Model):
    """Observed state, written by the operator."""

    model_config = ConfigDict(extra="allow")
    observed_generation: int | None = None
    """metadata.generation the operator last reconciled."""
    replicas: int | None = None
    """Runtime pods that exist (the scale subresource's status)."""
    ready_replicas: int | None = None
    """Runtime pods that are ready (model loaded and warmed up)."""
    updated_replicas: int | None = None
    """Runtime pods running the current spec."""
    selector: str | None = None
    """Label selector of the pods (for the scale subresource and the HPA)."""
    url: str | None = None
    """In-cluster HTTP endpoint of the model (KServe v2 protocol)."""
    model_name: str | None = None
    """Name the model is served under (the v2 path /v2/models/<modelName>)."""
    autoscaler: AutoscalerStatus | None = None
    """What the autoscaler (the HPA, or the HPA KEDA created) reports; set while
    spec.autoscaling is."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Progressing and Degraded (metav1.Condition)."""


# CEL rules the API server enforces (x-kubernetes-validations), keyed by the schema path
CEL_RULES: dict[str, list[dict[str, str]]] = {
    "spec": [
        {
            "rule": "!has(self.autoscaling) || self.autoscaling.minReplicas <= self.autoscaling.maxReplicas",
            "message": "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas",
            "fieldPath": ".autoscaling.minReplicas",
        },
        {
            # a transition rule (oldSelf): checked on updates, including the scale subresource
            "rule": "!has(self.autoscaling) || !has(oldSelf.autoscaling) || self.replicas == oldSelf.replicas",
            "message": "spec.replicas cannot change while spec.autoscaling is set: the autoscaler owns the "
            "replicas (change autoscaling.minReplicas/maxReplicas, or remove spec.autoscaling first)",
            "fieldPath": ".replicas",
        },
    ],
    "spec.model": [
        {
            "rule": "self.uri.matches('^(https?|s3|gs|pvc)://') || self.uri.startsWith('/')",
            "message": "model.uri must start with http://, https://, s3://, gs://, pvc:// or be an absolute path",
            "fieldPath": ".uri",
        },
        {
            "rule": "!self.uri.startsWith('pvc://') || self.uri.matches('^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/.+')",
            "message": "a pvc:// uri names a claim and a path: pvc://<claim>/<path>",
            "fieldPath": ".uri",
        },
    ],
    "spec.runtime": [
        {
            "rule": (
                "!has(self.gpus) || self.gpus == 0 || !has(self.resources) || "
                "!has(self.resources.limits) || !('nvidia.com/gpu' in self.resources.limits)"
            ),
            "message": "set either runtime.gpus or resources.limits['nvidia.com/gpu'], not both",
            "fieldPath": ".gpus",
        },
        {
            "rule": (
                "!has(self.workers) || self.workers <= 1 || ((!has(self.gpus) || self.gpus == 0) && "
                "(!has(self.resources) || !has(self.resources.limits) || !('nvidia.com/gpu' in self.resources.limits)))"
            ),
            "message": "a GPU model runs one serving process: runtime.workers must be 1 or unset with runtime.gpus "
            "or an nvidia.com/gpu limit",
            "fieldPath": ".workers",
        },
    ],
}


# ---------------------------------------------------------------------------------------
# InferenceEnsemble: a pipeline of models served as one model by the kubeinfer router

V2_DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                "FP16", "FP32", "FP64", "BYTES")
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
TENSOR_NAME = r"^[A-Za-z0-9_.:/-]+$"


class TensorSpec(_Model):
    """An ensemble input or output tensor."""

    name: str = Field(min_length=1, max_length=128, pattern=TENSOR_NAME)
    """Tensor name, as clients send (inputs) and receive (outputs) it."""
    datatype: Literal[V2_DATATYPES]  # type: ignore[valid-type]
    """KServe v2 datatype (FP32, INT64, UINT8, BYTES, ...)."""
    dims: list[Annotated[int, Field(ge=-1)]] = Field(default_factory=list, max_length=16)
    """Shape without the batch dimension when maxBatchSize > 0; -1 is variable."""


class EnsembleStep(_Model):
    """One step of the pipeline: a model (an InferenceModel of the same namespace, or an
    external v2 endpoint) with Triton's input_map / output_map."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9_.-]+$")
    """Step name (unique in the ensemble; errors and metrics name it)."""
    model_ref: str | None = Field(default=None, max_length=253, pattern=DNS_LABEL)
    """Name of an InferenceModel in the ensemble's namespace; the step calls its Service and
    the model name it serves."""
    url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://[^/\s]+/?$")
    """Base URL (http://host:port) of an external KServe v2 endpoint, instead of modelRef."""
    model_name: str | None = Field(default=None, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    """Model name at an external url (default: the step name); only with url."""
    model_version: str | None = Field(default=None, max_length=32)
    """Model version to call (default: the endpoint's default version)."""
    input_map: dict[str, str] = Field(min_length=1, max_length=64)
    """Step model input -> ensemble tensor it reads."""
    output_map: dict[str, str] = Field(min_length=1, max_length=64)
    """Step model output -> ensemble tensor it writes."""

    @model_validator(mode="after")
    def _one_target(self) -> EnsembleStep:
        if (self.model_ref is None) == (self.url is None):
            raise ValueError(f"step '{self.name}': set exactly one of modelRef and url")
        if self.model_name is not None and self.url is None:
            raise ValueError(f"step '{self.name}': modelName is only for an external url (a modelRef "
                             "serves the model its InferenceModel names)")
        return self


class RouterSpec(_Model):
    """The router Deployment (``kubeinfer route``) that serves the ensemble."""

    replicas: int = Field(default=1, ge=0)
    """Number of router pods."""
    image: str | None = None
    """Router image (default: the operator's runtime image; the router is part of it)."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    """When the kubelet pulls the image (default: the operator's configured policy)."""
    resources: Resources = Field(default_factory=Resources)
    """CPU and memory requests and limits of the router container."""
    env: list[EnvVar] = Field(default_factory=list)
    """Extra environment variables of the router container."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels a router pod's node must have."""
    tolerations: list[Toleration] = Field(default_factory=list)
    """Taints the router pods tolerate."""
    affinity: Annotated[dict[str, Any] | None, _free_object("Pod affinity rules (core/v1 Affinity).")] = None
    log_level: Literal["debug", "info", "warning", "error"] | None = None
    """Log level of the router (KUBEINFER_LOG_LEVEL; default info)."""
    max_inflight: int | None = Field(default=None, ge=1)
    """Requests executing at once per router pod; more are rejected with 503 (default 256)."""
    shutdown_delay_seconds: int = Field(default=5, ge=0, le=300)
    """Seconds a pod keeps serving after SIGTERM with readiness already false."""
    drain_seconds: int = Field(default=30, ge=1, le=3600)
    """Seconds allowed for in-flight requests to finish after the delay."""


class InferenceEnsembleSpec(_Model):
    """Desired state of an InferenceEnsemble: a pipeline of models served as one v2 model
    by a Deployment of kubeinfer routers."""

    model_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$", max_length=128)
    """Name the ensemble is served under (default: the resource's name)."""
    max_batch_size: int = Field(default=0, ge=0)
    """> 0: tensors carry a leading batch dimension that dims exclude."""
    inputs: list[TensorSpec] = Field(min_length=1, max_length=64)
    """Tensors a client sends; steps read them by name."""
    outputs: list[TensorSpec] = Field(min_length=1, max_length=64)
    """Tensors returned to the client; each is written by a step."""
    steps: list[EnsembleStep] = Field(min_length=1, max_length=32)
    """The steps; they run as a DAG derived from the tensors they read and write."""
    router: RouterSpec = Field(default_factory=RouterSpec)
    """The router pods: replicas, image, resources, scheduling."""
    rollout: Rollout = Field(default_factory=Rollout)
    """Rolling-update and disruption-budget settings of the router."""

    @model_validator(mode="after")
    def _unique(self) -> InferenceEnsembleSpec:
        for what, items in (("steps", self.steps), ("inputs", self.inputs), ("outputs", self.outputs)):
            names = [i.name for i in items]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"{what}: duplicate name(s) {', '.join(dup)}")
        return self


class InferenceEnsembleStatus(_Model):
    """Observed state, written by the operator."""

    model_config = ConfigDict(extra="allow")
    observed_generation: int | None = None
    """metadata.generation the operator last reconciled."""
    url: str | None = None
    """In-cluster HTTP endpoint of the ensemble (KServe v2 protocol)."""
    model_name: str | None = None
    """Name the ensemble is served under (the v2 path /v2/models/<modelName>)."""
    steps: str | None = None
    """Steps whose model is ready, of all steps (e.g. 2/3)."""
    replicas: int | None = None
    """Router pods that exist."""
    ready_replicas: int | None = None
    """Router pods that are ready."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Progressing and Degraded (metav1.Condition)."""


ENSEMBLE_CEL_RULES: dict[str, list[dict[str, str]]] = {
    "spec.steps[]": [
        {
            "rule": "has(self.modelRef) != has(self.url)",
            "message": "each step sets exactly one of modelRef and url",
        },
        {
            "rule": "!has(self.modelName) || has(self.url)",
            "message": "modelName is only for a step with an external url",
            "fieldPath": ".modelName",
        },
    ],
}
