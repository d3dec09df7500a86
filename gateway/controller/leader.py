"""Leader election on a coordination.k8s.io Lease, as client-go does it: the holder renews
`renewTime`; anyone may take a lease not renewed for `leaseDurationSeconds`; every write
carries the resourceVersion it read, so two candidates can never both win (409)."""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from gateway.kube import fields, objects
from gateway.kube.client import LEASES, Kube, KubeError
from gateway.logs import log_event

logger = logging.getLogger("gateway.session-controller")


def micro_time(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime | None:
    """RFC 3339, timezone-aware; None for anything else (a Lease or Session written by hand)."""
    return fields.parse_time(text)


class LeaderElector:
    def __init__(self, kube: Kube, name: str, identity: str, duration: int = 15,
                 renew_interval: float = 5.0, retry_interval: float = 2.0) -> None:
        self.kube, self.name, self.identity = kube, name, identity
        self.duration, self.renew_interval, self.retry_interval = (
            duration, renew_interval, retry_interval)
        self._last_renew: datetime | None = None

    async def acquire(self) -> None:
        """Return once this process holds the lease."""
        while not await self._try_acquire():
            await asyncio.sleep(self.retry_interval)
        log_event(logger, "leader_acquired", identity=self.identity, lease=self.name)

    async def hold(self) -> None:
        """Renew until leadership is lost (then return); a renewal that fails for longer than
        the lease duration counts as lost, since another candidate may have taken over."""
        while True:
            await asyncio.sleep(self.renew_interval)
            try:
                lease = await self.kube.get(LEASES, self.name)
                if lease["spec"].get("holderIdentity") != self.identity:
                    break
                lease["spec"]["renewTime"] = micro_time(datetime.now(timezone.utc))
                await self.kube.replace(LEASES, self.name, lease)
                self._last_renew = datetime.now(timezone.utc)
            except KubeError as exc:
                if exc.status == 409:
                    continue  # raced with ourselves or a reader; the next round re-reads
                expired = self._last_renew is None or datetime.now(timezone.utc) - \
                    self._last_renew > timedelta(seconds=self.duration)
                log_event(logger, "lease_renew_failed", level=logging.WARNING,
                          identity=self.identity, error=str(exc))
                if expired:
                    break
        log_event(logger, "leader_lost", level=logging.WARNING, identity=self.identity,
                  lease=self.name)

    async def release(self) -> None:
        """Hand the lease back on a clean shutdown so a standby takes over at once."""
        try:
            lease = await self.kube.get(LEASES, self.name)
            if lease["spec"].get("holderIdentity") == self.identity:
                lease["spec"].update(holderIdentity="", leaseDurationSeconds=1)
                await self.kube.replace(LEASES, self.name, lease)
        except KubeError as exc:
            log_event(logger, "lease_release_failed", level=logging.WARNING, error=str(exc))

    async def _try_acquire(self) -> bool:
        now = datetime.now(timezone.utc)
        stamp = micro_time(now)
        try:
            lease: dict[str, Any] = await self.kube.get(LEASES, self.name)
        except KubeError as exc:
            if exc.status != 404:
                log_event(logger, "lease_read_failed", level=logging.WARNING, error=str(exc))
                return False
            try:
                await self.kube.create(LEASES, objects.lease(self.name, self.identity,
                                                             self.duration, stamp))
            except KubeError:
                return False  # someone else created it first (409) or the API failed
            self._last_renew = now
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        renewed = parse_time(spec.get("renewTime"))
        duration = spec.get("leaseDurationSeconds") or self.duration
        expired = renewed is None or now > renewed + timedelta(seconds=duration)
        if holder and holder != self.identity and not expired:
            return False
        ours = holder == self.identity
        transitions = (spec.get("leaseTransitions") or 0) + (0 if ours else 1)
        fresh = objects.lease(self.name, self.identity, self.duration, stamp,
                              acquired=spec.get("acquireTime") if ours else None,
                              transitions=transitions)
        fresh["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
        try:
            await self.kube.replace(LEASES, self.name, fresh)
        except KubeError:
            return False
        self._last_renew = now
        return True
