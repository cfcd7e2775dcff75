"""The request budget of one Feldera instance: at most `--feldera-rps` requests in any second.

A sliding window: a request may start when fewer than `capacity` started within the last `window`
seconds (`capacity / window` is the rate), so a burst up to the capacity goes at once and the
average never exceeds the rate. Two classes wait for a free slot: interactive requests (a spec
change's reads, every action, follow-ups, deletion) are served before the observation pass's
reads, which the pass spreads over its period anyway. So a user's flip waits at most for the
slots other interactive requests took, never behind a pass.

Whether a request is background is said by the context that makes it (`background_reads()`),
and only its reads are: an action decided during a pass is as urgent as any.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "feldera_background_reads", default=False
)


@contextlib.contextmanager
def background_reads() -> Iterator[None]:
    """Reads made in this context (and the tasks it starts) yield to interactive requests."""
    token = _BACKGROUND.set(True)
    try:
        yield
    finally:
        _BACKGROUND.reset(token)


async def interactive(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` (in a task of its own) as interactive, whatever context started the task: a
    follow-up scheduled during a pass confirms an action, it is not observation."""
    _BACKGROUND.set(False)  # the task's own copy of the context
    return await coro


def is_background(method: str) -> bool:
    return method == "GET" and _BACKGROUND.get()


class RequestBudget:
    """At most `rate` requests per second to one instance, interactive ones first."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a positive number of requests per second, got {rate}")
        self.rate = rate
        # Whole requests per window: 2.5 rps is 5 per 2 s, 0.5 rps one per 2 s.
        self.capacity = max(1, math.floor(rate))
        self.window = self.capacity / rate
        self._clock = clock
        self._started: deque[float] = deque()
        self._waiting: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (
            deque(),  # interactive
            deque(),  # background
        )
        self._timer: asyncio.TimerHandle | None = None
        self.waited = 0  # requests that had to wait for a slot (a measure of pressure)

    def _free(self, now: float) -> bool:
        started = self._started
        while started and started[0] <= now - self.window:
            started.popleft()
        return len(started) < self.capacity

    async def acquire(self, *, background: bool = False) -> None:
        """Wait for a slot (none when one is free and nobody of this class or above waits)."""
        now = self._clock()
        ahead = self._waiting[0] or (background and self._waiting[1])
        if not ahead and self._free(now):
            self._started.append(now)
            return
        self.waited += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting[1 if background else 0]
        queue.append(future)
        self._schedule()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release_unused()  # granted, then cancelled: give the slot back
            else:
                with contextlib.suppress(ValueError):
                    queue.remove(future)
            raise

    def _release_unused(self) -> None:
        if self._started:
            self._started.pop()
        self._wake()

    def _schedule(self) -> None:
        if self._timer is not None:
            return
        if not self._started or len(self._started) < self.capacity:
            delay = 0.0
        else:
            delay = max(self._started[0] + self.window - self._clock(), 0.0)
        self._timer = asyncio.get_running_loop().call_later(delay, self._wake)

    def _wake(self) -> None:
        self._timer = None
        now = self._clock()
        for queue in self._waiting:
            while queue and self._free(now):
                future = queue.popleft()
                if future.done():
                    continue  # cancelled while waiting
                self._started.append(now)
                future.set_result(None)
        if any(self._waiting):
            self._schedule()
