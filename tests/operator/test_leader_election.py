"""Leader election on a Lease (services/leader.py): the rule in a table, and the elector against the real
API server, with short timings."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client

from kubetune_operator.services.leader import LeaseElector, LeaseTimings, Seen, may_acquire
from support import wait_for

FAST = LeaseTimings(lease_seconds=3, renew_deadline_seconds=2.0, retry_seconds=0.3)


@pytest.mark.parametrize(
    ("seen", "now", "expected"),
    [
        (None, 0.0, True),  # no Lease yet
        (Seen("me", "t1", 0.0), 1.0, True),  # ours: renew
        (Seen(None, "t1", 0.0), 1.0, True),  # released by a leader that stopped cleanly
        (Seen("other", "t1", 0.0), 14.0, False),  # the other renewed 14 s ago (by our clock)
        (Seen("other", "t1", 0.0), 16.0, True),  # not renewed for a lease duration: expired
    ],
    ids=["none", "ours", "released", "held", "expired"],
)
def test_who_may_take_the_lease(seen: Seen | None, now: float, expected: bool) -> None:
    assert may_acquire("me", seen, 15, now) is expected


def elector(api: client.ApiClient, namespace: str, identity: str) -> LeaseElector:
    return LeaseElector(client.CoordinationV1Api(api), namespace, "kubetune-operator", identity, FAST)


@pytest.mark.cluster
def test_one_leader_a_standby_that_takes_over_when_renewals_stop_and_at_once_on_release(
    api_client: client.ApiClient, namespace: str
) -> None:
    first, second = elector(api_client, namespace, "a"), elector(api_client, namespace, "b")
    assert first.try_acquire_or_renew()
    assert not second.try_acquire_or_renew()  # held, and renewed just now
    assert first.try_acquire_or_renew()  # the leader renews

    # The leader dies without a word: the standby takes over a lease duration after the last renewal.
    started = time.monotonic()
    stop = threading.Event()
    assert second.wait_for_leadership(stop)
    waited = time.monotonic() - started
    assert FAST.lease_seconds <= waited < FAST.lease_seconds + 2, waited
    lease = client.CoordinationV1Api(api_client).read_namespaced_lease("kubetune-operator", namespace)
    assert (lease.spec.holder_identity, lease.spec.lease_transitions) == ("b", 1)
    assert not first.try_acquire_or_renew()  # the old leader, back, finds it taken

    # A clean stop hands the Lease over without the wait.
    second.release()
    started = time.monotonic()
    assert first.wait_for_leadership(stop)
    assert time.monotonic() - started < 1.0


@pytest.mark.cluster
def test_a_leader_that_cannot_renew_gives_up(api_client: client.ApiClient, namespace: str) -> None:
    leader, taker = elector(api_client, namespace, "a"), elector(api_client, namespace, "b")
    assert leader.try_acquire_or_renew()
    stop = threading.Event()
    renewing = threading.Thread(target=leader.keep_renewing, args=(stop,), daemon=True)
    renewing.start()
    time.sleep(1)
    # Someone else takes the Lease by force (as an expired one would be): renewals now conflict.
    api = client.CoordinationV1Api(api_client)
    lease = api.read_namespaced_lease("kubetune-operator", namespace)
    lease.spec.holder_identity = "b"
    api.replace_namespaced_lease("kubetune-operator", namespace, lease)
    wait_for(lambda: leader.lost.is_set(), 10, "the leader to give up")
    stop.set()
    assert not taker.lost.is_set()
