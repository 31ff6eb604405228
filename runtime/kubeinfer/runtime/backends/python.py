"""Python backend: a user's ``model.py`` with ``class TritonPythonModel``, as in Triton.

The model class has ``initialize(args)`` (optional), ``execute(requests) -> responses``
(one ``InferenceResponse`` per ``InferenceRequest``, in order; a response may carry a
``TritonError`` instead of outputs) and ``finalize()`` (optional). The tensor classes come
from ``kubeinfer.runtime.backends.python_api``, which is also importable as Triton's
``triton_python_backend_utils``.

``args`` is Triton's: ``model_config`` (the config as a JSON string), ``model_instance_kind``
(``CPU``/``GPU``), ``model_instance_name`` (``<model>_<i>``), ``model_instance_device_id``,
``model_repository`` (the model's directory), ``model_version``, ``model_name``.

Instances: ``instance_group`` count N creates N objects of the class, each initialized
with its own ``model_instance_name``; each of the scheduler's N threads borrows one for a
call, so a model object never runs two ``execute`` calls at once. Unlike Triton (one stub
process per instance) they share one interpreter: code that holds the GIL does not run in
parallel; numpy and scikit-learn release it for their heavy parts.

Batching: the dynamic batcher calls ``execute_requests`` with the batch as the list of its
requests (no concatenation), so the model's ``execute`` gets one ``InferenceRequest`` per
client request, as in Triton, and an error response fails only its request. ``execute``
(one request) serves single requests and the schedulers that do not batch.

Failures: a ``model.py`` that does not import, lacks ``TritonPythonModel`` or whose
``initialize`` raises is a ``ConfigError`` at startup. An exception from ``execute``, an
error response, a wrong number of responses, or a missing/mistyped output is a
``BackendError`` for the requests concerned; the server keeps serving.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import queue
import re
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from kubeinfer.runtime.backends import python_api
from kubeinfer.runtime.backends.base import Backend
from kubeinfer.runtime.datatypes import to_numpy
from kubeinfer.runtime.errors import BackendError, ConfigError
from kubeinfer.spec.types import TensorSpec

log = logging.getLogger(__name__)

TRITON_UTILS = "triton_python_backend_utils"


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def import_model_file(path: Path, model_name: str):
    """Import ``model.py`` under a private module name; its directory joins ``sys.path``
    so it can import modules next to it (as in Triton)."""
    if TRITON_UTILS not in sys.modules and importlib.util.find_spec(TRITON_UTILS) is None:
        sys.modules[TRITON_UTILS] = python_api
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module_name = "kubeinfer_model_" + re.sub(r"\W", "_", model_name)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        log.error("importing %s failed", path, exc_info=True)
        raise ConfigError(f"{path}: cannot import the model: {_describe(exc)}") from None
    return module


class PythonBackend(Backend):
    def __init__(
        self,
        path: Path,
        *,
        model_name: str,
        model_version: str,
        model_config: dict,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        batched: bool = False,
        instance_kind: str = "CPU",
        instances: int = 1,
    ) -> None:
        if not inputs or not outputs:
            raise ConfigError(
                f"{path}: a Python model's tensors cannot be read from model.py; declare "
                "'input' and 'output' in config.pbtxt"
            )
        lead = (-1,) if batched else ()
        self.inputs = [TensorSpec(s.name, s.datatype, lead + s.shape) for s in inputs]
        self.outputs = [TensorSpec(s.name, s.datatype, lead + s.shape) for s in outputs]
        self._dtypes = {s.name: to_numpy(s.datatype) for s in outputs}
        self._name = model_name
        self._version = int(model_version) if model_version.isdigit() else -1
        module = import_model_file(path, model_name)
        cls = getattr(module, "TritonPythonModel", None)
        if not isinstance(cls, type):
            raise ConfigError(f"{path}: defines no class TritonPythonModel")
        if not callable(getattr(cls, "execute", None)):
            raise ConfigError(f"{path}: TritonPythonModel has no execute(self, requests) method")
        config_json = json.dumps(model_config)
        self._models: list = []
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for i in range(max(instances, 1)):
            model = self._create(cls, path, {
                "model_config": config_json,
                "model_instance_kind": instance_kind,
                "model_instance_name": f"{model_name}_{i}",
                "model_instance_device_id": "0",
                "model_repository": str(path.parent.parent),
                "model_version": model_version,
                "model_name": model_name,
            })
            self._models.append(model)
            self._free.put(model)

    def _create(self, cls, path: Path, args: dict):
        try:
            model = cls()
            initialize = getattr(model, "initialize", None)
            if initialize is not None:
                initialize(args)
        except Exception as exc:
            log.error("%s: initialize failed", path, exc_info=True)
            self.unload()
            raise ConfigError(
                f"{path}: TritonPythonModel.initialize() failed for "
                f"{args['model_instance_name']}: {_describe(exc)}"
            ) from None
        return model

    # -- execution (instance threads) ------------------------------------------------------

    def execute(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """One batch as one request; its error is raised (the scheduler isolates it)."""
        (result,) = self.execute_requests([inputs], output_names)
        if isinstance(result, BackendError):
            raise result
        return result

    def execute_requests(
        self, requests: Sequence[Mapping[str, np.ndarray]], output_names: Sequence[str]
    ) -> list[dict[str, np.ndarray] | BackendError]:
        """Each request's outputs or its error; raises BackendError when the call fails."""
        pb_requests = [
            python_api.InferenceRequest(
                [python_api.Tensor(name, arr) for name, arr in inputs.items()],
                requested_output_names=output_names,
                model_name=self._name,
                model_version=self._version,
            )
            for inputs in requests
        ]
        model = self._free.get()
        try:
            responses = model.execute(pb_requests)
        except python_api.TritonModelException as exc:
            raise BackendError(str(exc)) from None
        except Exception as exc:
            raise BackendError(f"model.py execute() raised {_describe(exc)}") from None
        finally:
            self._free.put(model)
        if not isinstance(responses, list | tuple) or len(responses) != len(pb_requests):
            count = len(responses) if isinstance(responses, list | tuple) else type(responses).__name__
            raise BackendError(
                f"model.py execute() returned {count} responses for {len(pb_requests)} requests"
            )
        return [self._outputs(r, output_names) for r in responses]

    def _outputs(self, response, output_names: Sequence[str]) -> dict[str, np.ndarray] | BackendError:
        if not isinstance(response, python_api.InferenceResponse):
            return BackendError(f"model.py execute() returned a {type(response).__name__}, not an InferenceResponse")
        error = response.error()
        if error is not None:
            return BackendError(error.message() if hasattr(error, "message") else str(error))
        tensors = {t.name(): t.as_numpy() for t in response.output_tensors()}
        out: dict[str, np.ndarray] = {}
        for name in output_names:
            arr = tensors.get(name)
            if arr is None:
                return BackendError(f"model.py returned no output '{name}' (it returned {sorted(tensors)})")
            want = self._dtypes[name]
            if arr.dtype != want:
                if want.kind == "O" and arr.dtype.kind in "SU":
                    arr = arr.astype(np.object_)
                else:
                    return BackendError(f"output '{name}' is {arr.dtype}, the config declares {want}")
            out[name] = arr
        return out

    def unload(self) -> None:
        models, self._models = self._models, []
        for model in models:
            finalize = getattr(model, "finalize", None)
            if finalize is None:
                continue
            try:
                finalize()
            except Exception:
                log.exception("TritonPythonModel.finalize() failed")
