"""GPU gauges: rendered from a fake NVML module, and empty where NVML or a GPU is missing."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from kubeinfer.runtime.backends.gpu_metrics import GpuMetrics, render_gpu


class FakeNvml:
    def __init__(self, count: int = 2, fail_init: bool = False) -> None:
        self.count = count
        self.fail_init = fail_init

    def nvmlInit(self):
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetUUID(self, h):
        return f"GPU-{h}".encode()

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=25 * (h + 1))

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(total=80 << 30, used=(h + 1) << 30)

    def nvmlDeviceGetPowerUsage(self, h):
        return 150_500  # milliwatts

    def nvmlDeviceGetPowerManagementLimit(self, h):
        raise RuntimeError("Not Supported")


def test_gauges_per_gpu_with_triton_names():
    text = GpuMetrics(FakeNvml()).render()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) == {
        "nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes", "nv_gpu_power_usage",
    }
    util = {s.labels["gpu_uuid"]: s.value for s in families["nv_gpu_utilization"].samples}
    assert util == {"GPU-0": 0.25, "GPU-1": 0.5}
    used = {s.labels["gpu_uuid"]: s.value for s in families["nv_gpu_memory_used_bytes"].samples}
    assert used == {"GPU-0": float(1 << 30), "GPU-1": float(2 << 30)}
    assert families["nv_gpu_power_usage"].samples[0].value == 150.5
    assert families["nv_gpu_utilization"].type == "gauge"


def test_empty_without_gpus_or_nvml():
    assert GpuMetrics(FakeNvml(count=0)).render() == ""
    assert not GpuMetrics(FakeNvml(fail_init=True)).available
    assert GpuMetrics(FakeNvml(fail_init=True)).render() == ""
    assert render_gpu([]) == ""
    # on this machine: whatever is installed, no exception
    GpuMetrics().render()
