"""What the operator last applied to each Deployment it owns: skip re-applying one unchanged.

An owned Deployment sends an event each time its controller writes its status (3-5 per
rollout, for every model); each used to trigger a server-side apply of the same manifest,
which changes nothing but costs a request and the API server's apply work. Instead a pass
records, per Deployment, the digest of the manifest it applied and the Deployment's uid and
``metadata.generation`` right after that apply. ``generation`` moves with every change of
the Deployment's spec, by anyone: the same uid, generation and digest mean there is no
drift to correct and nothing new to apply (the resync still applies everything, metadata
included). One small tuple per Deployment, dropped when the Deployment is deleted; empty
after a restart, when the first event applies as before.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def digest(manifest: dict[str, Any]) -> str:
    return hashlib.blake2b(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode(),
                           digest_size=16).hexdigest()


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


class Applied:
    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[str, int, str]] = {}  # (ns, name) -> (uid, generation, digest)

    def __len__(self) -> int:
        return len(self._last)

    def record(self, manifest: dict[str, Any], applied: dict[str, Any] | None) -> None:
        """``applied``: what the API server answered to the apply of ``manifest``."""
        meta = (applied or {}).get("metadata") or {}
        if meta.get("uid") and meta.get("generation") is not None:
            self._last[_key(manifest)] = (meta["uid"], meta["generation"], digest(manifest))
        else:
            self.forget(*_key(manifest))

    def unchanged(self, manifest: dict[str, Any], live: dict[str, Any] | None) -> bool:
        """``live`` (the Deployment as last seen) is what the apply of ``manifest`` left."""
        if live is None:
            return False
        meta = live.get("metadata") or {}
        last = self._last.get(_key(manifest))
        return last is not None and not meta.get("deletionTimestamp") \
            and last == (meta.get("uid"), meta.get("generation"), digest(manifest))

    def forget(self, namespace: str, name: str) -> None:
        self._last.pop((namespace, name), None)
