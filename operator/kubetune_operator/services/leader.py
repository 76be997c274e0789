"""Leader election on a coordination.k8s.io Lease, as client-go does it: one replica runs the Kopf
operator, the others wait and take over when the leader stops renewing.

Expiry is judged by this replica's own clock, from when it last saw the Lease record change, never by
comparing the leader's timestamps with ours: the replicas' clocks may disagree.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseTimings:
    # A standby takes over at most this long after the leader's last renewal (plus one retry period).
    lease_seconds: int = 15
    # The leader gives up (and the process exits) when it could not renew for this long.
    renew_deadline_seconds: float = 10.0
    retry_seconds: float = 2.0


@dataclass(frozen=True)
class Seen:
    """The Lease record as last read, and when (our monotonic clock) its holder or renewal changed."""

    holder: str | None
    renew_time: str | None
    changed_at: float


def may_acquire(identity: str, seen: Seen | None, lease_seconds: int, now: float) -> bool:
    """No Lease yet, ours already, released, or not renewed for a whole lease duration."""
    if seen is None or not seen.holder or seen.holder == identity:
        return True
    return now - seen.changed_at > lease_seconds


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaseElector:
    def __init__(
        self,
        api: client.CoordinationV1Api,
        namespace: str,
        name: str,
        identity: str,
        timings: LeaseTimings = LeaseTimings(),
        clock: Callable[[], float] = time.monotonic,
        on_attempt: Callable[[], None] = lambda: None,
    ) -> None:
        self.api, self.namespace, self.name, self.identity = api, namespace, name, identity
        self.timings, self.clock = timings, clock
        # Called on every attempt to take or renew the Lease: the liveness of the election loop.
        self.on_attempt = on_attempt
        self._seen: Seen | None = None
        self.lost = threading.Event()

    def _observe(self, lease: client.V1Lease | None) -> None:
        holder = lease.spec.holder_identity if lease and lease.spec else None
        renew = str(lease.spec.renew_time) if lease and lease.spec and lease.spec.renew_time else None
        if self._seen is None or (self._seen.holder, self._seen.renew_time) != (holder, renew):
            self._seen = Seen(holder, renew, self.clock())

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True while we hold the Lease."""
        self.on_attempt()
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as e:
            if e.status != 404:
                log.warning("reading Lease %s/%s failed: %s", self.namespace, self.name, e.reason)
                return False
            return self._create()
        self._observe(lease)
        if not may_acquire(self.identity, self._seen, self.timings.lease_seconds, self.clock()):
            return False
        now = _now()
        spec = lease.spec = lease.spec or client.V1LeaseSpec()
        if spec.holder_identity != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
            log.info("taking over Lease %s/%s from %s", self.namespace, self.name, spec.holder_identity)
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = self.timings.lease_seconds
        spec.renew_time = now
        try:
            # resourceVersion from the read: a concurrent taker makes this a 409, never two leaders.
            self._observe(self.api.replace_namespaced_lease(self.name, self.namespace, lease))
        except ApiException as e:
            log.info("Lease %s/%s not taken: %s", self.namespace, self.name, e.reason)
            return False
        return True

    def _create(self) -> bool:
        now = _now()
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=self.timings.lease_seconds,
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            self._observe(self.api.create_namespaced_lease(self.namespace, body))
        except ApiException as e:
            log.info("Lease %s/%s not created: %s", self.namespace, self.name, e.reason)
            return False
        return True

    def wait_for_leadership(self, stop: threading.Event) -> bool:
        """Blocks until this replica leads (True) or `stop` is set (False)."""
        log.info("waiting to lead (Lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
        while not stop.is_set():
            if self.try_acquire_or_renew():
                log.info("leading (Lease %s/%s)", self.namespace, self.name)
                return True
            stop.wait(self.timings.retry_seconds)
        return False

    def keep_renewing(self, stop: threading.Event) -> None:
        """Renews until `stop`; sets `lost` when renewal failed for longer than the renew deadline."""
        last_renewed = self.clock()
        while not stop.wait(self.timings.retry_seconds):
            if self.try_acquire_or_renew():
                last_renewed = self.clock()
            elif self.clock() - last_renewed > self.timings.renew_deadline_seconds:
                log.error("lost Lease %s/%s: could not renew it", self.namespace, self.name)
                self.lost.set()
                return

    def release(self) -> None:
        """On a clean stop: hand the Lease over at once instead of making the standby wait it out."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as e:
            log.warning("releasing Lease %s/%s failed: %s", self.namespace, self.name, e.reason)
