"""GPU gauges under Triton's names, read through NVML at scrape time.

``nv_gpu_utilization`` (0.0-1.0), ``nv_gpu_memory_total_bytes``,
``nv_gpu_memory_used_bytes``, ``nv_gpu_power_usage`` (watts) and ``nv_gpu_power_limit``
(watts), each labelled ``gpu_uuid``. NVML comes from the ``nvidia-ml-py`` package
(module ``pynvml``, the ``gpu`` extra). Without it, without a driver or without a GPU,
``render`` returns an empty string; a reading that fails on one GPU leaves that sample out.
Nothing happens at import; NVML is initialised once, by the first ``GpuMetrics``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)

GAUGES = (
    ("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)"),
    ("nv_gpu_memory_total_bytes", "GPU total memory, in bytes"),
    ("nv_gpu_memory_used_bytes", "GPU used memory, in bytes"),
    ("nv_gpu_power_usage", "GPU power usage in watts"),
    ("nv_gpu_power_limit", "GPU power management limit in watts"),
)


def render_gpu(samples: Iterable[tuple[str, dict[str, float]]]) -> str:
    """Prometheus text for ``(gpu_uuid, {gauge name: value})`` samples; '' for none."""
    samples = list(samples)
    if not samples:
        return ""
    lines = []
    for name, doc in GAUGES:
        rows = [(uuid, values[name]) for uuid, values in samples if name in values]
        if not rows:
            continue
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} gauge"]
        lines += [f'{name}{{gpu_uuid="{uuid}"}} {float(v)!r}' for uuid, v in rows]
    return "\n".join(lines) + "\n" if lines else ""


class GpuMetrics:
    """Reads every visible GPU. ``nvml`` is the ``pynvml`` module (injectable for tests)."""

    def __init__(self, nvml=None) -> None:
        self._handles: list[tuple[str, object]] = []
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError:
                log.debug("nvidia-ml-py is not installed: no GPU metrics")
                return
        self._nvml = nvml
        try:
            nvml.nvmlInit()
            for i in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                uuid = nvml.nvmlDeviceGetUUID(handle)
                self._handles.append((uuid.decode() if isinstance(uuid, bytes) else uuid, handle))
        except Exception as exc:  # NVMLError: no driver, no GPU
            log.info("NVML unavailable (%s): no GPU metrics", exc)
            self._handles = []

    @property
    def available(self) -> bool:
        return bool(self._handles)

    def read(self) -> list[tuple[str, dict[str, float]]]:
        nvml = getattr(self, "_nvml", None)
        samples = []
        for uuid, handle in self._handles:
            values: dict[str, float] = {}
            for name, read in (
                ("nv_gpu_utilization", lambda h: nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0),
                ("nv_gpu_memory_total_bytes", lambda h: nvml.nvmlDeviceGetMemoryInfo(h).total),
                ("nv_gpu_memory_used_bytes", lambda h: nvml.nvmlDeviceGetMemoryInfo(h).used),
                ("nv_gpu_power_usage", lambda h: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0),
                ("nv_gpu_power_limit", lambda h: nvml.nvmlDeviceGetPowerManagementLimit(h) / 1000.0),
            ):
                try:
                    values[name] = read(handle)
                except Exception:  # e.g. power readings not supported on this board
                    continue
            samples.append((uuid, values))
        return samples

    def render(self) -> str:
        return render_gpu(self.read()) if self._handles else ""
