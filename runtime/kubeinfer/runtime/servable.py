"""What the server layer serves: one v2 model's metadata, readiness, inference and stats.

A local model (scheduler + backend) is one servable; the router's ensemble is another.
The HTTP and gRPC layers talk only to this interface.
"""

from __future__ import annotations

from typing import Protocol

from kubeinfer.runtime.types import InferRequest, InferResponse


class Servable(Protocol):
    name: str
    version: str
    #: output name -> class labels (classification extension)
    labels: dict[str, list[str]]
    #: whether outputs carry a batch dimension (for classification)
    batched: bool

    def is_ready(self) -> bool: ...

    def metadata(self) -> dict: ...

    def config_json(self) -> dict: ...

    def statistics(self) -> dict: ...

    def pending_count(self) -> int: ...

    async def infer(self, request: InferRequest) -> InferResponse: ...

    async def start(self) -> None:
        """Load, warm up; ``is_ready`` turns true at the end."""
        ...

    def mark_unready(self) -> None:
        """Health reports not ready (endpoints drain) while requests are still served."""
        ...

    async def drain(self) -> None:
        """Readiness false; finish what was accepted; release resources."""
        ...
