"""The router's errors: subclasses of the runtime's taxonomy, so the one status mapping in
``kubeinfer.runtime.server.errors`` applies unchanged (it walks the class hierarchy).

| what happened at a step                          | error             | HTTP |
|--------------------------------------------------|-------------------|------|
| the step model answered 4xx (it rejected input)  | ``StepRejected``  | 400  |
| 503 from the step, or it cannot be reached       | ``StepUnavailable`` | 503 |
| the request's ``timeout`` ran out during a step  | ``StepTimedOut``  | 503  |
| any other status, or a malformed response        | ``StepFailed``    | 500  |

Every message names the step and its model and carries the model's own error text.
``EnsembleError`` (an invalid definition) is the specification's, re-exported here.
"""

from __future__ import annotations

from kubeinfer.runtime.errors import BackendError, DeadlineExceeded, InvalidInput, ModelNotReady
from kubeinfer.spec.errors import EnsembleError

__all__ = ["EnsembleError", "StepError", "StepFailed", "StepRejected", "StepTimedOut", "StepUnavailable"]


class StepError:
    """Mixin: which step failed, and the step model's status and message."""

    step: str
    model: str
    status: int | None
    #: what happened, without the step prefix
    detail: str

    def _init_step(self, step: str, model: str, status: int | None, detail: str) -> None:
        self.step, self.model, self.status, self.detail = step, model, status, detail


def _text(step: str, model: str, detail: str) -> str:
    return f"ensemble step '{step}' (model '{model}') failed: {detail}"


class StepRejected(InvalidInput, StepError):
    reason = "OTHER"

    def __init__(self, step: str, model: str, status: int | None, detail: str) -> None:
        super().__init__(_text(step, model, detail))
        self._init_step(step, model, status, detail)


class StepUnavailable(ModelNotReady, StepError):
    reason = "OTHER"

    def __init__(self, step: str, model: str, status: int | None, detail: str) -> None:
        super().__init__(_text(step, model, detail))
        self._init_step(step, model, status, detail)


class StepTimedOut(DeadlineExceeded, StepError):
    def __init__(self, step: str, model: str, status: int | None, detail: str) -> None:
        super().__init__(_text(step, model, detail))
        self._init_step(step, model, status, detail)


class StepFailed(BackendError, StepError):
    def __init__(self, step: str, model: str, status: int | None, detail: str) -> None:
        super().__init__(_text(step, model, detail))
        self._init_step(step, model, status, detail)
