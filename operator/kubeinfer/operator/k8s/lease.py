"""Leader election on a ``coordination.k8s.io/v1`` Lease: exactly one operator acts.

client-go's scheme: a candidate takes the Lease when nobody holds it or the holder stopped
renewing it ``lease_seconds`` ago (measured on the candidate's own clock, from when it last
saw the record change — no comparison of clocks between machines); the holder renews it
every ``retry_seconds``; every write carries the resourceVersion it read, so two candidates
can never both win. A holder that could not renew for ``renew_deadline_seconds`` (shorter
than ``lease_seconds``) stops acting before anyone else may take over.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

log = logging.getLogger("kubeinfer.operator.leader")


@dataclass(frozen=True)
class LeaseTimings:
    lease_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_seconds: float = 2.0


class LeaderLease:
    def __init__(self, client: AsyncClient, namespace: str, name: str, identity: str,
                 timings: LeaseTimings = LeaseTimings()) -> None:
        if not timings.retry_seconds < timings.renew_deadline_seconds < timings.lease_seconds:
            raise ValueError("need retry_seconds < renew_deadline_seconds < lease_seconds")
        self.client, self.namespace, self.name, self.identity = client, namespace, name, identity
        self.timings = timings
        self._seen: tuple[str, float] | None = None  # (resourceVersion, local time first seen)

    def _now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    async def _try(self) -> bool:
        """One attempt to take or renew the Lease; True while we hold it."""
        try:
            lease = await self.client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            new = Lease(metadata=ObjectMeta(name=self.name, namespace=self.namespace),
                        spec=LeaseSpec(holderIdentity=self.identity,
                                       leaseDurationSeconds=int(self.timings.lease_seconds),
                                       acquireTime=self._now(), renewTime=self._now(), leaseTransitions=0))
            try:
                await self.client.create(new)
            except ApiError as exc2:
                if exc2.status.code == 409:
                    return False  # another candidate created it first
                raise
            return True
        spec = lease.spec or LeaseSpec()
        version = lease.metadata.resourceVersion or ""
        if self._seen is None or self._seen[0] != version:
            self._seen = (version, time.monotonic())
        mine = spec.holderIdentity == self.identity
        duration = spec.leaseDurationSeconds or self.timings.lease_seconds
        expired = not spec.holderIdentity or time.monotonic() - self._seen[1] > duration
        if not mine and not expired:
            return False
        if not mine:
            spec.holderIdentity = self.identity
            spec.acquireTime = self._now()
            spec.leaseTransitions = (spec.leaseTransitions or 0) + 1
        spec.renewTime = self._now()
        spec.leaseDurationSeconds = int(self.timings.lease_seconds)
        lease.spec = spec
        try:
            await self.client.replace(lease)  # carries resourceVersion: 409 when someone else wrote
        except ApiError as exc:
            if exc.status.code == 409:
                return False
            raise
        return True

    async def _attempt(self) -> bool:
        try:
            return await self._try()
        except (ApiError, httpx2.HTTPError, asyncio.TimeoutError) as exc:
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            return False

    async def acquire(self) -> None:
        """Wait until this candidate holds the Lease."""
        log.info("waiting to lead (lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
        while not await self._attempt():
            await asyncio.sleep(self.timings.retry_seconds)
        log.warning("leading as %s (lease %s/%s)", self.identity, self.namespace, self.name)

    async def hold(self) -> None:
        """Renew until a renewal has failed for the renew deadline; then return (leadership
        is lost: the caller must stop acting at once)."""
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(self.timings.retry_seconds)
            if await self._attempt():
                last_ok = time.monotonic()
            elif time.monotonic() - last_ok > self.timings.renew_deadline_seconds:
                log.error("lost the lease %s/%s: stopping", self.namespace, self.name)
                return
