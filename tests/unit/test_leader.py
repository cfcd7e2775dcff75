"""Leader election (leader.py) against an in-memory Lease API: who leads, that a hung renewal ends
leadership by the renew deadline, and that a released lease is taken over at once."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from feldera_operator.leader import LeaderElectionConfig, LeaderElector


class FakeLeaseApi:
    """One Lease, with resourceVersion conflicts, every call's kwargs kept, and a switch that
    makes calls hang (a half-open connection) whatever timeout they ask for."""

    def __init__(self) -> None:
        self.lease: Any = None
        self.rv = 0
        self.lock = threading.Lock()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.hang = threading.Event()  # set: every call blocks until `unhang`
        self.unhang = threading.Event()

    def _enter(self, name: str, kwargs: dict[str, Any]) -> None:
        self.calls.append((name, kwargs))
        if self.hang.is_set():
            self.unhang.wait()

    def read_namespaced_lease(self, name: str, namespace: str, **kwargs: Any) -> Any:
        self._enter("read", kwargs)
        with self.lock:
            if self.lease is None:
                raise ApiException(status=404, reason="Not Found")
            return copy.deepcopy(self.lease)

    def create_namespaced_lease(self, namespace: str, body: Any, **kwargs: Any) -> Any:
        self._enter("create", kwargs)
        with self.lock:
            if self.lease is not None:
                raise ApiException(status=409, reason="AlreadyExists")
            self.rv += 1
            body.metadata.resource_version = str(self.rv)
            self.lease = copy.deepcopy(body)
            return body

    def replace_namespaced_lease(self, name: str, namespace: str, body: Any, **kwargs: Any) -> Any:
        self._enter("replace", kwargs)
        with self.lock:
            if body.metadata.resource_version != self.lease.metadata.resource_version:
                raise ApiException(status=409, reason="Conflict")
            self.rv += 1
            body = copy.deepcopy(body)
            body.metadata.resource_version = str(self.rv)
            self.lease = body
            return body

    @property
    def holder(self) -> str | None:
        return None if self.lease is None else self.lease.spec.holder_identity


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class Candidate:
    def __init__(self, api: FakeLeaseApi, identity: str, **timing: Any) -> None:
        settings: dict[str, Any] = {"lease_duration": 3, "renew_deadline": 1.0, "retry_period": 0.1}
        settings.update(timing)
        self.started = threading.Event()
        self.lost: list[str] = []
        self.elector = LeaderElector(
            LeaderElectionConfig("default", "feldera-operator", identity, **settings),
            api,
            on_started=self.started.set,
            on_lost=self.lost.append,
        )
        self.elector.start()


@pytest.fixture
def api() -> Iterator[FakeLeaseApi]:
    fake = FakeLeaseApi()
    yield fake
    fake.unhang.set()


@pytest.fixture
def candidates() -> Iterator[list[Candidate]]:
    made: list[Candidate] = []
    yield made
    for c in made:
        c.elector._stop.set()


def test_one_candidate_leads_and_the_other_waits_while_the_lease_is_renewed(
    api: FakeLeaseApi, candidates: list[Candidate]
) -> None:
    a = Candidate(api, "a")
    candidates.append(a)
    wait_for(a.started.is_set, 2, "a leads")
    b = Candidate(api, "b")
    candidates.append(b)
    time.sleep(0.5)  # several of b's tries, within a lease duration: it must not lead
    assert not b.started.is_set() and api.holder == "a"
    assert all(kw.get("_request_timeout") for _, kw in api.calls)  # every call is bounded


def test_a_renewal_hanging_past_the_renew_deadline_ends_leadership(
    api: FakeLeaseApi, candidates: list[Candidate]
) -> None:
    a = Candidate(api, "a")
    candidates.append(a)
    wait_for(a.started.is_set, 2, "a leads")
    hung_at = time.monotonic()
    api.hang.set()  # the next renewal never returns, whatever its timeout
    wait_for(lambda: a.lost, 3, "the watchdog ends leadership")
    assert 0.8 <= time.monotonic() - hung_at <= 2.5  # by the 1 s renew deadline
    assert "renew" in a.lost[0]


def test_a_released_lease_is_taken_over_at_the_standbys_next_try(
    api: FakeLeaseApi, candidates: list[Candidate]
) -> None:
    a = Candidate(api, "a", lease_duration=30, renew_deadline=20.0)
    candidates.append(a)
    wait_for(a.started.is_set, 2, "a leads")
    b = Candidate(api, "b", lease_duration=30, renew_deadline=20.0)
    candidates.append(b)
    time.sleep(0.3)
    assert not b.started.is_set()
    assert a.elector.release()
    released = time.monotonic()
    wait_for(b.started.is_set, 2, "b leads")  # not after the 30 s lease expired
    assert time.monotonic() - released < 1.0
    assert api.holder == "b" and not a.lost
    assert isinstance(api.lease.spec, kubernetes.client.V1LeaseSpec)


def test_an_expired_lease_is_taken_over(api: FakeLeaseApi, candidates: list[Candidate]) -> None:
    a = Candidate(api, "a", lease_duration=1)
    candidates.append(a)
    wait_for(a.started.is_set, 2, "a leads")
    a.elector._stop.set()  # dies without a word: no more renewals, no release
    b = Candidate(api, "b", lease_duration=1)
    candidates.append(b)
    wait_for(b.started.is_set, 3, "b leads after the lease expired")
    assert api.holder == "b"
