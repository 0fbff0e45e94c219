"""The silent-stream deadline: a stream on which the client has waited
``deadline`` seconds for a message without one is cancelled, so that the
reconnect loop reopens it from its next step (as after any lost stream).

The clock runs only while the client waits for a message: a training loop
that is slow to ask for the next batch (gRPC's flow control then holds the
loader back) never trips it, and neither does a slow loader whose messages
keep coming, since each message restarts it. What it catches is a stream
that is alive to TCP and HTTP/2 but sends nothing: a loader stuck on its
storage, a proxy that stopped forwarding.

One watchdog thread per client watches all its streams; it sleeps until the
earliest expiry and is woken only to stop.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["Watchdog", "Watched"]


class _Cancellable(Protocol):
    def cancel(self) -> bool: ...


class Watched:
    """One call under the watchdog. :meth:`waiting` before asking for a
    message, :meth:`received` once one came; :attr:`expired` says the
    watchdog cancelled the call."""

    __slots__ = ("call", "expired", "since")

    def __init__(self, call: _Cancellable) -> None:
        self.call = call
        self.since: float | None = None  # when the client began to wait
        self.expired = False

    def waiting(self) -> None:
        self.since = time.monotonic()

    def received(self) -> None:
        self.since = None


class Watchdog:
    """Cancels watched calls that waited ``deadline`` seconds for a message."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._watched: set[Watched] = set()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def watch(self, call: _Cancellable) -> Watched:
        w = Watched(call)
        with self._cond:
            self._watched.add(w)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="shardstream-deadline", daemon=True
                )
                self._thread.start()
        return w

    def unwatch(self, w: Watched) -> None:
        with self._cond:
            self._watched.discard(w)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._watched.clear()
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                # With nobody waiting, sleep a whole deadline: a wait that
                # begins meanwhile expires after this thread wakes again.
                wake = now + self.deadline
                for w in list(self._watched):
                    since = w.since
                    if since is None:
                        continue
                    if now - since >= self.deadline:
                        w.expired = True
                        self._watched.discard(w)
                        w.call.cancel()
                    else:
                        wake = min(wake, since + self.deadline)
                self._cond.wait(max(wake - now, 0.001))
