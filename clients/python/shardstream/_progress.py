"""Progress reports: how long the training loop waited for its batches.

A :class:`ProgressReporter` is told, from the iterating thread, when the
loop starts waiting for a batch (``__next__`` entered) and when it got one;
a daemon thread sends what happened since the previous report to the
coordinator (ReportProgress) about once a second. Recording is a few
arithmetic operations under a lock; the network is only ever used by the
thread, and a failed report is logged, never raised.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Protocol

import grpc

from shardstream.v1 import shardstream_pb2 as pb
from shardstream.v1 import shardstream_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from shardstream._client import Client

__all__ = ["ProgressReporter", "check_job_name"]

log = logging.getLogger("shardstream")

_JOB_NAME = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}$")


def check_job_name(name: object) -> str | None:
    """A ``job_name`` argument: None, or a label-safe name."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise TypeError(f"job_name: {type(name).__name__}, want str or None")
    if not _JOB_NAME.match(name):
        raise ValueError(f"job_name: {name!r}, want 1 to 128 characters of [A-Za-z0-9_.:/-]")
    return name


class _ReportStub(Protocol):
    def ReportProgress(  # noqa: N802 - the RPC's name
        self,
        request: pb.ReportProgressRequest,
        *,
        timeout: float,
        metadata: tuple[tuple[str, str], ...],
    ) -> pb.ReportProgressResponse: ...


# Reports that failed in a row before the reporter logs again (it logs the
# first, then every 60th: about once a minute).
_LOG_EVERY = 60


class ProgressReporter:
    """Sends one stream group's progress to the coordinator every
    ``interval`` seconds until :meth:`stop`."""

    def __init__(
        self,
        client: Client,
        job: pb.JobSpec,
        *,
        job_name: str,
        rank: int,
        worker: int,
        workers: int,
        samples: int,
        nbytes: int,
        interval: float = 1.0,
    ) -> None:
        self._stub: _ReportStub = pb_grpc.CoordinatorServiceStub(client._channel(client.address))
        self._metadata = client._metadata
        self._address = client.address
        self._base = pb.ReportProgressRequest(
            job=job, job_name=job_name, rank=rank, worker=worker, workers=workers
        )
        self._interval = interval
        self._lock = threading.Lock()
        now = time.monotonic()
        self._since = now  # the start of the period being counted
        self._waiting_since: float | None = None
        self._steps = 0
        self._wait = 0.0
        # The training loop's own waits, once loop_wait is called: they
        # replace the stream-side ones (see loop_wait).
        self._loop_measured = False
        self._loop_wait = 0.0
        self._loop_steps = 0
        self._loop_last_step = -1
        self._last_step = -1
        self._samples, self._bytes = samples, nbytes  # cumulative, at the last report
        self._now_samples, self._now_bytes = samples, nbytes
        self._stopped = threading.Event()
        self.sent = 0  # reports the coordinator accepted
        self._thread = threading.Thread(
            target=self._run, name=f"shardstream-progress-rank{rank}", daemon=True
        )
        self._thread.start()

    def waiting(self) -> None:
        """The training loop asks for the next batch."""
        with self._lock:
            self._waiting_since = time.monotonic()

    def took(self, step: int, samples: int, nbytes: int) -> None:
        """The loop got step ``step``; ``samples`` and ``nbytes`` are the
        cumulative counts of the stream group's Stats."""
        now = time.monotonic()
        with self._lock:
            if self._waiting_since is not None:
                self._wait += now - self._waiting_since
                self._waiting_since = None
            self._steps += 1
            self._last_step = step
            self._now_samples, self._now_bytes = samples, nbytes

    def loop_wait(self, seconds: float, step: int) -> None:
        """The training loop waited ``seconds`` for step ``step``'s batch
        (Stats.on_wait). From the first call on, reports carry the loop's
        waits and steps instead of the stream-side ones, which a prefetch
        thread distorts: it waits for the stream while the loop is still
        busy with its step, and takes batches the loop has not had yet."""
        with self._lock:
            self._loop_measured = True
            self._loop_wait += seconds
            self._loop_steps += 1
            self._loop_last_step = step

    def _period(self) -> pb.ReportProgressRequest:
        """The report of the period that ends now; a wait in progress is
        split at the report."""
        now = time.monotonic()
        req = pb.ReportProgressRequest()
        req.CopyFrom(self._base)
        with self._lock:
            wait = self._wait
            if self._waiting_since is not None:
                wait += now - self._waiting_since
                self._waiting_since = now
            steps, last_step = self._steps, self._last_step
            if self._loop_measured:
                wait, steps, last_step = self._loop_wait, self._loop_steps, self._loop_last_step
            elapsed = max(now - self._since, 1e-6)
            req.last_step = max(last_step, 0)
            req.steps = steps
            req.samples = max(0, self._now_samples - self._samples)
            req.bytes = max(0, self._now_bytes - self._bytes)
            req.wait_seconds = min(wait, elapsed)
            req.elapsed_seconds = min(elapsed, 3600.0)
            self._since, self._wait, self._steps = now, 0.0, 0
            self._loop_wait, self._loop_steps = 0.0, 0
            self._samples, self._bytes = self._now_samples, self._now_bytes
        return req

    def _run(self) -> None:
        failures = 0
        while not self._stopped.wait(self._interval):
            req = self._period()
            try:
                resp = self._stub.ReportProgress(
                    req, timeout=max(self._interval, 1.0), metadata=self._metadata
                )
            except grpc.RpcError as e:
                code = e.code() if isinstance(e, grpc.Call) else grpc.StatusCode.UNKNOWN
                if self._stopped.is_set():
                    return
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    log.debug("shardstream: %s takes no progress reports", self._address)
                    return
                failures += 1
                if failures % _LOG_EVERY == 1:
                    log.warning(
                        "shardstream: progress report to %s failed (%s: %s); still training",
                        self._address,
                        code.name,
                        e.details() if isinstance(e, grpc.Call) else e,
                    )
                continue
            except ValueError:  # the channel was closed (interpreter exit)
                return
            failures = 0
            self.sent += 1
            if resp.interval_seconds > 0:
                self._interval = min(max(resp.interval_seconds, 0.1), 60.0)

    def stop(self) -> None:
        """Ends the reports; never blocks on the network for long."""
        self._stopped.set()
        self._thread.join(timeout=0.2)
