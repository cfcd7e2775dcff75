"""The request budget of one Feldera instance: at most `rate` requests start in any window, and
interactive requests go before the observation pass's reads."""

from __future__ import annotations

import asyncio
import time

import pytest

from feldera_operator.budget import RequestBudget, background_reads, interactive, is_background


async def test_a_burst_up_to_the_rate_goes_at_once_and_the_next_waits_for_the_window() -> None:
    budget = RequestBudget(5)
    started = time.monotonic()
    for _ in range(5):
        await budget.acquire()
    assert time.monotonic() - started < 0.1
    await budget.acquire()
    assert time.monotonic() - started >= 0.95  # the first slot frees a window later
    assert budget.waited == 1


async def test_interactive_requests_go_before_waiting_reads_of_the_pass() -> None:
    budget = RequestBudget(2)
    await budget.acquire()
    await budget.acquire()  # the window is full
    order: list[str] = []

    async def one(name: str, background: bool) -> None:
        await budget.acquire(background=background)
        order.append(name)

    read = asyncio.create_task(one("read", True))
    await asyncio.sleep(0.05)  # the read waits first
    flip = asyncio.create_task(one("flip", False))
    await asyncio.gather(read, flip)
    assert order == ["flip", "read"]


async def test_a_request_cancelled_while_waiting_takes_no_slot() -> None:
    budget = RequestBudget(1)
    await budget.acquire()
    waiting = asyncio.create_task(budget.acquire())
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    started = time.monotonic()
    await budget.acquire()  # the next window's slot is this one's
    assert time.monotonic() - started < 1.1


async def test_a_fraction_of_a_request_per_second_is_one_per_longer_window() -> None:
    budget = RequestBudget(0.5)
    assert (budget.capacity, budget.window) == (1, 2.0)
    with pytest.raises(ValueError):
        RequestBudget(0)


async def test_only_reads_made_during_a_pass_are_background_and_spawned_work_is_not() -> None:
    assert not is_background("GET")
    with background_reads():
        assert is_background("GET")
        assert not is_background("POST")  # an action decided during a pass is urgent

        async def followup() -> bool:
            return is_background("GET")

        assert not await asyncio.create_task(interactive(followup()))
    assert not is_background("GET")
