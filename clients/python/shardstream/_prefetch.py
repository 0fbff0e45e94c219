"""Bounded background prefetch: a thread takes the next items of an
iterator while the training loop works on the current one.

At most ``depth`` items are taken and not yet handed over: the thread
takes a slot before it asks the source for an item, and the consumer frees
the slot as it takes the item. So a slow training loop stops the thread
after ``depth`` items, the thread stops reading the gRPC stream, and gRPC's
flow control slows the loader: backpressure is kept, and memory stays at
``depth`` items plus what gRPC buffers.

An error in the thread (a lost stream past its retries, a decode error)
is queued behind the items taken before it, so the consumer raises it at
the batch where it happened.

The thread stops when the consumer closes the prefetcher (an iterator
dropped, garbage-collected or finished), and at interpreter exit (an
``atexit`` hook stops every prefetcher still running, before the gRPC
clients close). It is a daemon thread: it never keeps the process alive.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Prefetcher"]

log = logging.getLogger("shardstream")

_T = TypeVar("_T")

# How long close() waits for the thread to finish what it is doing (a
# decode, a reopened stream's backoff) before leaving it: it is a daemon and
# stops at its next step anyway.
_JOIN_TIMEOUT = 10.0

_running: weakref.WeakSet[Prefetcher[Any]] = weakref.WeakSet()


@atexit.register
def _stop_running() -> None:
    for p in list(_running):
        p.close()


class _End:
    """The source ended (``error`` None) or raised ``error``."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class Prefetcher(Generic[_T]):
    """Iterates ``source`` in a background thread, ``depth`` items ahead.

    ``source`` is a generator: the thread closes it when it stops.
    ``cancel`` is called (from the consumer's thread) when the consumer
    closes early, to wake a thread blocked in the source (cancelling the
    gRPC calls); the source must then end promptly.
    """

    def __init__(
        self,
        source: Iterator[_T],
        depth: int,
        *,
        cancel: Callable[[], None] | None = None,
        name: str = "shardstream-prefetch",
    ) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth: {depth}, must be >= 1")
        self._source = source
        self._cancel = cancel
        # Two C-level queues rather than a Condition and a Semaphore: the
        # hand-over of a small batch costs about half as much (measured).
        # A token in _slots is room for one more item.
        self._slots: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(depth):
            self._slots.put(None)
        self._items: queue.SimpleQueue[_T | _End] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        _running.add(self)
        self._thread.start()

    def _run(self) -> None:
        end = _End(None)
        try:
            while True:
                self._slots.get()
                if self._stop.is_set():
                    return
                item = next(self._source, end)
                self._items.put(item)
                if item is end:
                    return
        except BaseException as e:
            self._items.put(_End(e))
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.debug("shardstream: closing the prefetched source failed", exc_info=True)

    def __iter__(self) -> Iterator[_T]:
        return self

    def __next__(self) -> _T:
        if self._done:
            raise StopIteration
        item = self._items.get()
        self._slots.put(None)
        if isinstance(item, _End):
            self._done = True
            _running.discard(self)
            if item.error is not None:
                raise item.error
            raise StopIteration
        return item

    def close(self) -> None:
        """Stops the thread: it takes no more items; one blocked in the
        source is woken by ``cancel``. Items taken and not handed over are
        dropped."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._done = True
        _running.discard(self)
        self._slots.put(None)  # wakes a thread waiting for a slot
        if self._thread.is_alive() and self._cancel is not None:
            self._cancel()
        if self._thread is not threading.current_thread():
            self._thread.join(_JOIN_TIMEOUT)
            if self._thread.is_alive():
                log.warning(
                    "shardstream: prefetch thread still busy %.0fs after close; leaving it",
                    _JOIN_TIMEOUT,
                )
        while not self._items.empty():
            self._items.get_nowait()
