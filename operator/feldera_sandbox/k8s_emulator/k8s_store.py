"""The Kubernetes API emulator's storage: objects, one global resourceVersion, watch history.

One `Collection` per resource type holds its objects in a dict keyed by (namespace, name), so a
get or write costs the same with 20 or 20,000 objects. Every write takes the next value of one
global counter as its resourceVersion, like etcd's revision, and appends an event to the
collection's bounded history; watches resume from that history by bisecting on the
resourceVersion, so no request ever rescans what earlier requests did.

Stored objects are never mutated after they are stored: a write replaces the dict. That lets list
responses, watch events and the history share the same dicts without copying.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    rv: int
    # The object before a MODIFIED write, so a selector watch can turn it into ADDED / DELETED
    # when the object moves into or out of the selection, as the apiserver does.
    prev: Obj | None = None


class History:
    """The last `capacity` events of one collection, searchable by resourceVersion.

    Two parallel lists with a moving start offset instead of a deque: bisect needs random access,
    and trimming the front only every `capacity` appends keeps appends amortised O(1).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._rvs: list[int] = []
        self._events: list[WatchEvent] = []
        self._start = 0
        # Every event with rv > floor is still held; a resume from below it is "too old".
        self.floor = 0

    def append(self, event: WatchEvent) -> None:
        self._rvs.append(event.rv)
        self._events.append(event)
        if len(self._rvs) - self._start > self.capacity:
            self.floor = self._rvs[self._start]
            self._start += 1
            if self._start >= self.capacity:
                del self._rvs[: self._start]
                del self._events[: self._start]
                self._start = 0

    def since(self, rv: int) -> list[WatchEvent] | None:
        """Events after `rv`, or None when some of them already fell out of the window."""
        if rv < self.floor:
            return None
        index = bisect.bisect_right(self._rvs, rv, lo=self._start)
        return self._events[index:]

    def __len__(self) -> int:
        return len(self._rvs) - self._start


@dataclass(eq=False)
class Watcher:
    """One open watch: events that pass its filter are queued for its response stream."""

    accepts: Callable[[Obj], bool]
    queue: asyncio.Queue[WatchEvent | None] = field(default_factory=asyncio.Queue)

    def offer(self, event: WatchEvent) -> None:
        now = self.accepts(event.obj)
        if event.type == "MODIFIED" and event.prev is not None:
            before = self.accepts(event.prev)
            if now and not before:
                event = WatchEvent("ADDED", event.obj, event.rv)
            elif before and not now:
                event = WatchEvent("DELETED", event.obj, event.rv)
            elif not now:
                return
        elif not now:
            return
        self.queue.put_nowait(event)

    def close(self) -> None:
        self.queue.put_nowait(None)


class Collection:
    """The objects of one resource type (all versions share it), its history and watchers."""

    def __init__(self, history_size: int) -> None:
        self.objects: dict[Key, Obj] = {}
        self.history = History(history_size)
        self.watchers: set[Watcher] = set()
        # Objects per namespace, so "is this namespace empty?" costs nothing at 20,000 objects.
        self._per_namespace: Counter[str] = Counter()

    def count(self, namespace: str) -> int:
        return self._per_namespace[namespace]

    def set(self, key: Key, obj: Obj) -> Obj | None:
        prev = self.objects.get(key)
        if prev is None:
            self._per_namespace[key[0]] += 1
        self.objects[key] = obj
        return prev

    def discard(self, key: Key) -> None:
        if self.objects.pop(key, None) is not None:
            self._per_namespace[key[0]] -= 1
            if not self._per_namespace[key[0]]:
                del self._per_namespace[key[0]]

    def items(self, namespace: str | None = None) -> Iterator[Obj]:
        """Objects sorted by (namespace, name), as etcd returns them."""
        for key in sorted(self.objects):
            if namespace is None or key[0] == namespace:
                yield self.objects[key]

    def record(self, event: WatchEvent) -> None:
        self.history.append(event)
        for watcher in list(self.watchers):
            watcher.offer(event)

    def close_watchers(self) -> None:
        for watcher in list(self.watchers):
            watcher.close()
        self.watchers.clear()


class Store:
    """All collections and the global resourceVersion counter."""

    def __init__(self, history_size: int = 20_000) -> None:
        self.history_size = history_size
        self.rv = 0
        self._collections: dict[tuple[str, str], Collection] = {}

    def collection(self, key: tuple[str, str]) -> Collection:
        found = self._collections.get(key)
        if found is None:
            # A new collection has had no events, so its history is complete from rv 0: a watch
            # may resume from any resourceVersion, even one read from another type's list.
            found = self._collections[key] = Collection(self.history_size)
        return found

    def collections(self) -> Iterator[Collection]:
        return iter(self._collections.values())

    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def put(self, collection: Collection, key: Key, obj: Obj, event_type: str) -> None:
        """Store `obj` (its metadata.resourceVersion already set) and announce it."""
        prev = collection.set(key, obj)
        rv = int(obj["metadata"]["resourceVersion"])
        collection.record(
            WatchEvent(event_type, obj, rv, prev if event_type == "MODIFIED" else None)
        )

    def remove(self, collection: Collection, key: Key, final: Obj) -> None:
        """Remove the object; `final` is its last state with the deletion's resourceVersion."""
        collection.discard(key)
        collection.record(WatchEvent("DELETED", final, int(final["metadata"]["resourceVersion"])))
