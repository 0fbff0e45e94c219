"""Live reassignment: following the coordinator's WatchAssignment for one rank,
and reading the rank's stripes from wherever the latest assignment says.

A :class:`AssignmentWatch` runs one background thread per iterating stream
group (a rank, or one DataLoader worker of it). The thread keeps a
WatchAssignment call open and retries it with backoff when the coordinator
is unreachable (restarting); the data streams go on meanwhile. The training
loop's thread never waits for it: :func:`watched_batches` looks, between two
batches, whether new addresses arrived, and reopens each moved stripe on its
new loader from that stripe's next step, so no batch is lost or repeated.

A coordinator without a live pool (``shardstream serve``, or one from before
the RPC) answers UNIMPLEMENTED: the thread ends and the plan's loaders stay.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Protocol

import grpc

from shardstream._client import backoff
from shardstream._columnar import ColumnarBatch
from shardstream._progress import ProgressReporter
from shardstream.types import Batch, Plan, Stats
from shardstream.v1 import shardstream_pb2 as pb
from shardstream.v1 import shardstream_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from shardstream._client import Client

__all__ = ["AssignmentWatch", "live_batches", "watched_batches"]

log = logging.getLogger("shardstream")


class _WatchCall(Protocol):
    def __iter__(self) -> Iterator[pb.WatchAssignmentResponse]: ...
    def cancel(self) -> bool: ...


class _WatchStub(Protocol):
    def WatchAssignment(  # noqa: N802 - the RPC's name
        self, request: pb.WatchAssignmentRequest, *, metadata: tuple[tuple[str, str], ...]
    ) -> _WatchCall: ...


# Statuses after which watching again cannot help: the request or the
# credentials are wrong, or the server has no pool (UNIMPLEMENTED).
_FINAL = frozenset(
    {
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)

# Backoff between watch attempts: as the streams' (see _client.backoff),
# but capped at 5 s: a coordinator down for minutes costs no CPU, and one
# that is back is found within seconds.
_WATCH_BACKOFF_MAX = 5.0


def stripes_of(plan: Plan, rank: int) -> tuple[str, ...]:
    """The rank's stripe addresses in ``plan`` (empty from an old server)."""
    return plan.rank_loaders[rank] if rank < len(plan.rank_loaders) else ()


def with_stripes(plan: Plan, rank: int, addresses: tuple[str, ...]) -> Plan:
    """``plan`` with the rank's stripe loaders replaced by ``addresses``."""
    rl = list(plan.rank_loaders)
    rl += [()] * (rank + 1 - len(rl))
    rl[rank] = addresses
    return dataclasses.replace(plan, rank_loaders=tuple(rl))


class AssignmentWatch:
    """Follows one rank's assignment in a daemon thread until :meth:`stop`.

    ``current`` is what the rank streams from now (its plan's stripes): a
    coordinator that has no assignment for the rank yet keeps them, so a
    restarted coordinator moves nothing that need not move.
    """

    def __init__(
        self,
        client: Client,
        job: pb.JobSpec,
        rank: int,
        max_loaders_per_rank: int,
        current: tuple[str, ...],
    ) -> None:
        # The channel is made here, in the iterating thread; gRPC channels
        # and stubs may then be used from any thread.
        self._stub: _WatchStub = pb_grpc.CoordinatorServiceStub(client._channel(client.address))
        self._metadata = client._metadata
        self._address = client.address
        self._req = pb.WatchAssignmentRequest(
            job=job, rank=rank, max_loaders_per_rank=max_loaders_per_rank
        )
        self._current = current
        self._lock = threading.Lock()
        self._new: tuple[str, ...] | None = None
        self._call: _WatchCall | None = None
        self._stopped = threading.Event()
        self._rng = random.Random()
        self.generation = 0  # the last assignment's, for tests and logs
        self._thread = threading.Thread(
            target=self._run, name=f"shardstream-watch-rank{rank}", daemon=True
        )
        self._thread.start()

    def take(self) -> tuple[str, ...] | None:
        """The addresses of an assignment that arrived since the last call,
        or None."""
        with self._lock:
            new, self._new = self._new, None
        return new

    def stop(self) -> None:
        """Ends the watch; never blocks on the network."""
        self._stopped.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()
        self._thread.join(timeout=0.2)

    def _run(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            req = pb.WatchAssignmentRequest()
            req.CopyFrom(self._req)
            req.current_addresses.extend(self._current)
            try:
                call = self._stub.WatchAssignment(req, metadata=self._metadata)
                with self._lock:
                    self._call = call
                if self._stopped.is_set():
                    call.cancel()
                    return
                for resp in call:
                    addrs = tuple(resp.addresses)
                    with self._lock:
                        self.generation = resp.generation
                        self._current = addrs
                        self._new = addrs
                    if failures:
                        log.info("shardstream: assignment watch on %s resumed", self._address)
                    failures = 0
                why = "stream ended"
            except grpc.RpcError as e:
                if self._stopped.is_set():
                    return
                code = e.code() if isinstance(e, grpc.Call) else grpc.StatusCode.UNKNOWN
                details = e.details() if isinstance(e, grpc.Call) else str(e)
                if code in _FINAL:
                    quiet = code == grpc.StatusCode.UNIMPLEMENTED  # no pool: nothing moves
                    log.log(
                        logging.DEBUG if quiet else logging.WARNING,
                        "shardstream: no assignment watch on %s (%s: %s); the plan's loaders stay",
                        self._address,
                        code.name,
                        details,
                    )
                    return
                why = f"{code.name}: {details}"
            except ValueError:  # the channel was closed (interpreter exit)
                return
            if self._stopped.is_set():
                return
            failures += 1
            delay = backoff(failures, self._rng, cap=_WATCH_BACKOFF_MAX)
            if failures == 1 or failures % 30 == 0:
                log.warning(
                    "shardstream: assignment watch on %s lost (%s); retrying in %.2fs, "
                    "the data streams go on",
                    self._address,
                    why,
                    delay,
                )
            self._stopped.wait(delay)


def watched_batches(
    client: Client,
    plan: Plan,
    job: pb.JobSpec,
    rank: int,
    stats: Stats,
    *,
    first: int = 0,
    stride: int = 1,
    columnar: bool = False,
    max_loaders_per_rank: int = 1,
    watch: AssignmentWatch | None = None,
) -> Generator[Batch | ColumnarBatch, None, None]:
    """The rank's batches for steps ``first, first+stride, …`` over its K
    stripe loaders, switching loaders as ``watch`` says (without a watch,
    a stripe moves only when its stream fails).

    Stream j of K reads the steps ``first + j*stride``, every ``K*stride``-th
    after that, from the j-th address; one batch is taken from each stream
    in turn. Before each batch the watch is asked for new addresses: a
    stripe whose loader changed is reopened on the new one from its next
    step (the others keep their streams), and a new stripe count restripes
    every stream from the next step.
    """

    def stripe(j: int, k: int, start: int, p: Plan) -> Generator[Batch | ColumnarBatch, None, None]:
        return client.batches(
            p,
            job,
            rank,
            stats,
            first=start,
            stride=k * stride,
            columnar=columnar,
            stripe=j,
            max_loaders_per_rank=max_loaders_per_rank,
        )

    addrs = stripes_of(plan, rank)
    k = max(1, len(addrs))
    streams = [stripe(j, k, first + j * stride, plan) for j in range(k)]
    step, j = first, 0  # the next step, and the stream that carries it
    try:
        while True:
            new = watch.take() if watch is not None else None
            if new and new != addrs:
                plan = with_stripes(plan, rank, new)
                if len(new) == k and len(addrs) == k:
                    for i in range(k):
                        if new[i] != addrs[i]:
                            streams[i].close()
                            streams[i] = stripe(i, k, step + ((i - j) % k) * stride, plan)
                else:
                    for st in streams:
                        st.close()
                    k, j = len(new), 0
                    streams = [stripe(i, k, step + i * stride, plan) for i in range(k)]
                log.info(
                    "shardstream: rank %d moves from %s to %s at step %d", rank, addrs, new, step
                )
                addrs = new
            # The first stream to end ends them all: every later step is
            # past the end too.
            b = next(streams[j], None)
            if b is None:
                return
            yield b
            step += stride
            j = (j + 1) % k
    finally:
        for st in streams:
            st.close()


def live_batches(
    client: Client,
    plan: Plan,
    job: pb.JobSpec,
    rank: int,
    stats: Stats,
    *,
    first: int,
    stride: int,
    columnar: bool,
    max_loaders_per_rank: int,
    job_name: str,
    worker: int,
) -> Generator[Batch | ColumnarBatch, None, None]:
    """:func:`watched_batches` with its :class:`AssignmentWatch`, and a
    :class:`ProgressReporter` timing how long each batch was waited for:
    the training loop's waits where this process sees them (``stats``'
    ``on_wait``, called as the dataset hands a batch over; with prefetch
    the consumer of this generator is a background thread, whose waits
    overlap the training step), else from the consumer asking for a batch
    to its arrival (a DataLoader worker). Both threads start with the first
    batch asked for and stop when the generator ends or is closed."""
    watch = AssignmentWatch(client, job, rank, max_loaders_per_rank, stripes_of(plan, rank))
    progress = ProgressReporter(
        client,
        job,
        job_name=job_name,
        rank=rank,
        worker=worker,
        workers=stride,
        samples=stats.samples,
        nbytes=stats.bytes,
    )
    batches = watched_batches(
        client,
        plan,
        job,
        rank,
        stats,
        first=first,
        stride=stride,
        columnar=columnar,
        max_loaders_per_rank=max_loaders_per_rank,
        watch=watch,
    )
    hooked = stats.on_wait is None
    if hooked:
        stats.on_wait = lambda seconds: progress.loop_wait(seconds, stats.handed_step)
    try:
        progress.waiting()
        for b in batches:
            progress.took(b.step, stats.samples, stats.bytes)
            yield b
            progress.waiting()
    finally:
        if hooked:
            stats.on_wait = None
        batches.close()
        watch.stop()
        progress.stop()
