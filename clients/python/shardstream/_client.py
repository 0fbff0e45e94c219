"""The gRPC client: channels, the three RPCs and the reconnect loop.

A :class:`Client` is made inside the dataset's iteration (after DataLoader
has forked its workers: gRPC channels must not cross a fork) and opens a
channel per address the first time it is needed; :meth:`Client.close`
cancels its streams and closes them all.

Exit: a stream left open (an iterator the script never finished) would make
the interpreter hang at exit, closing a channel whose gRPC threads are
already stopped. So every open client is closed by an ``atexit`` hook, which
runs while those threads still work, and a client closed during interpreter
finalization only cancels its calls.
"""

from __future__ import annotations

import atexit
import functools
import logging
import random
import re
import sys
import time
import weakref
from collections.abc import Callable, Generator, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, TypeVar

import grpc

from shardstream._columnar import ColumnarBatch, ColumnarFormatError, parse_response
from shardstream._convert import (
    batch_from_proto,
    dataset_info_from_proto,
    field_bytes,
    plan_from_proto,
)
from shardstream._deadline import Watchdog
from shardstream._fork import note_grpc_used
from shardstream.errors import ShardStreamError, from_rpc_error, handshake_failed
from shardstream.types import Batch, DatasetInfo, Plan, Stats
from shardstream.v1 import shardstream_pb2 as pb
from shardstream.v1 import shardstream_pb2_grpc as pb_grpc

__all__ = ["Client", "Security", "loader_address"]

log = logging.getLogger("shardstream")

# ---- typed stubs -----------------------------------------------------------
#
# grpc_tools.protoc generates untyped stubs (shardstream_pb2_grpc.py, checked
# for drift against `make proto`, so not edited); these Protocols state the
# part of them this client calls, with the message types of the generated
# shardstream_pb2.pyi. The method names are the RPCs'.


class _BatchStream(Protocol):
    """What a unary-stream call returns: the responses, and a way to stop."""

    def __iter__(self) -> Iterator[pb.StreamBatchesResponse]: ...
    def cancel(self) -> bool: ...


_Metadata = tuple[tuple[str, str], ...]
_R = TypeVar("_R")


class _CoordinatorStub(Protocol):
    def GetDataset(  # noqa: N802 - the RPC's name
        self,
        request: pb.GetDatasetRequest,
        *,
        timeout: float,
        wait_for_ready: bool,
        metadata: _Metadata,
    ) -> pb.GetDatasetResponse: ...

    def PlanEpoch(  # noqa: N802 - the RPC's name
        self,
        request: pb.PlanEpochRequest,
        *,
        timeout: float,
        wait_for_ready: bool,
        metadata: _Metadata,
    ) -> pb.PlanEpochResponse: ...


class _LoaderStub(Protocol):
    def StreamBatches(  # noqa: N802 - the RPC's name
        self, request: pb.StreamBatchesRequest, *, metadata: _Metadata
    ) -> _BatchStream: ...


class _RawBatchStream(Protocol):
    """A StreamBatches call whose responses stay serialized (columnar)."""

    def __iter__(self) -> Iterator[bytes]: ...
    def cancel(self) -> bool: ...


_STREAM_BATCHES = "/shardstream.v1.LoaderService/StreamBatches"


# ---- retries ---------------------------------------------------------------

# Codes after which the same request may succeed on a new stream: the server
# or the connection went away (UNAVAILABLE), the loader is full
# (RESOURCE_EXHAUSTED says to retry or use another loader), or a stream was
# cut by a server shutting down (CANCELLED, ABORTED: this client cancels a
# stream only when it stops iterating, and then it does not retry).
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
    }
)


def _retryable(err: grpc.RpcError) -> bool:
    if not isinstance(err, grpc.Call) or handshake_failed(err):
        return False
    code = err.code()
    if code in _RETRYABLE:
        return True
    # grpc-core reports a peer's HTTP/2 stream reset (a loader killed or
    # force-stopped mid-stream) as INTERNAL; the request itself was fine.
    return code == grpc.StatusCode.INTERNAL and "RST_STREAM" in (err.details() or "")


# gRPC's words for a message over the receiver's limit (grpc-core, this
# side) or the sender's (grpc-go, the loader): both RESOURCE_EXHAUSTED, which
# otherwise means "loader full, retry". The same batch would be too large
# again, so it is not retried.
_TOO_LARGE = re.compile(r"larger than max \((\d+) vs\. (\d+)\)")


def too_large_hint(err: grpc.RpcError, max_message_bytes: int) -> str | None:
    """The message for a batch over a message limit, or None when ``err``
    is something else."""
    if not isinstance(err, grpc.Call) or err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    m = _TOO_LARGE.search(err.details() or "")
    if m is None:
        return None
    size, limit = int(m.group(1)), int(m.group(2))
    side = (
        f"this client's max_message_bytes={max_message_bytes}"
        if limit == max_message_bytes
        else f"the loader's limit of {limit} bytes (service.Config.MaxSendMsgSize)"
    )
    return (
        f"a batch message of {size} bytes is over {side}: raise "
        f"ShardStreamDataset(max_message_bytes=...) to at least {size} (the server sends up "
        "to 256 MiB by default), or use a smaller batch_size "
        f"({err.details()})"
    )


# Backoff between attempts to reopen a stream: from 50 ms doubling to 2 s,
# each delay drawn uniformly from [d/2, d] ("equal jitter") so that the ranks
# of a job, cut off by one loader's death at the same moment, do not all
# come back to the next loader at the same instant.
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 2.0


def backoff(failures: int, rng: random.Random, cap: float = _BACKOFF_MAX) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (from 1),
    the doubling stopped at ``cap``."""
    d = min(cap, _BACKOFF_FIRST * 2.0 ** min(max(failures, 1), 10))
    return rng.uniform(d / 2, d)


# Clients with channels that may still be open, closed at interpreter exit.
_open: weakref.WeakSet[Client] = weakref.WeakSet()


@atexit.register
def _close_open_clients() -> None:
    for c in list(_open):
        c.close()


def loader_address(
    plan: Plan,
    rank: int,
    attempt: int,
    coordinator: str,
    *,
    stripe: int = 0,
    avoid: AbstractSet[str] = frozenset(),
) -> str:
    """The loader for ``rank``'s ``stripe`` on its ``attempt``-th stream:
    the planned one first (``rank_loaders[rank][stripe]``, or
    ``loader_addresses[rank]`` from a plan without stripes), then the others
    of the plan in turn (loaders are stateless, any of them serves any rank
    and stripe). A plan with fewer stripe loaders than ``stripe`` (a loader
    left the pool) gives the stripe one of those it has. An empty address in
    the plan, or none for the rank, means the coordinator's own (the
    embedded server).

    With ``avoid`` (the addresses whose streams just failed) it is the first
    of that order not avoided: the plan of a coordinator that has not yet
    dropped a dead loader still names it, and trying it again would cost a
    connect attempt and a backoff (or, for a vanished host, a connect
    timeout). When every address is avoided, the ``attempt``-th in turn."""
    addrs = [a or coordinator for a in plan.loader_addresses]
    stripes = plan.rank_loaders[rank] if rank < len(plan.rank_loaders) else ()
    if stripes:
        first = stripes[stripe % len(stripes)] or coordinator
    else:
        first = addrs[rank] if rank < len(addrs) else coordinator
    every = set(addrs) | {a or coordinator for r in plan.rank_loaders for a in r}
    order = [first, *sorted(every - {first})]
    fresh = [a for a in order if a not in avoid]
    if avoid and fresh:
        return fresh[0]
    return order[attempt % len(order)]


# ---- the client ------------------------------------------------------------


@dataclass(frozen=True)
class Security:
    """What a channel needs for TLS and a bearer token, read from files in
    the process that opens the channel.

    ``tls`` with no ``root_certificates`` verifies the server against the
    system's roots (gRPC's default bundle); ``client_cert`` and
    ``client_key`` (PEM) are for mutual TLS. ``token`` is sent as
    ``authorization: Bearer TOKEN`` on every call; it is kept out of the
    repr.
    """

    tls: bool = False
    root_certificates: bytes | None = None
    client_cert: bytes | None = None
    client_key: bytes | None = None
    token: str | None = field(default=None, repr=False)
    # Checked against the servers' certificates instead of the dialled
    # host (grpc.ssl_target_name_override): loaders advertised by IP.
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.client_key,
            certificate_chain=self.client_cert,
        )


_LOOPBACK = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|\[::1\]|::1)(:\d+)?$")


class Client:
    """Connections to one coordinator and the loaders its plans name.

    Args:
      address: ``host:port`` of the coordinator.
      timeout: seconds a unary call may take, waiting for the server
        included.
      retry_timeout: seconds to keep reopening a lost stream without
        receiving a batch.
      max_message_bytes: the largest message sent or received.
      security: TLS and the bearer token, for every channel (the loaders'
        too); None is plaintext without a token.
      stream_deadline: seconds a stream may keep the client waiting for a
        message before it is cancelled and reopened (see
        :mod:`shardstream._deadline`); None never.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float,
        retry_timeout: float,
        max_message_bytes: int,
        security: Security | None = None,
        stream_deadline: float | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.retry_timeout = retry_timeout
        self.max_message_bytes = max_message_bytes
        self._security = security or Security()
        token = self._security.token
        # Sent on every call, streams and their reopenings included. As
        # plain call metadata rather than call credentials, which gRPC
        # refuses on a plaintext channel (a token to a loopback server
        # without TLS is a fair set-up).
        self._metadata: _Metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._channels: dict[str, grpc.Channel] = {}
        self._calls: set[_BatchStream | _RawBatchStream] = set()
        self._rng = random.Random()
        self.stream_deadline = stream_deadline
        self._watchdog = Watchdog(stream_deadline) if stream_deadline else None
        # Set by cancel(): the streams end instead of reopening.
        self._cancelled = False

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def cancel(self) -> None:
        """Cancels the streams still open, for good: a stream cancelled
        here ends instead of reopening. Safe from another thread than the
        one reading the streams (the prefetch thread's consumer)."""
        self._cancelled = True
        calls, self._calls = self._calls, set()
        for call in calls:
            call.cancel()
        if self._watchdog is not None:
            self._watchdog.close()

    def close(self) -> None:
        """Cancels the streams still open and closes every channel.

        During interpreter finalization (a suspended iterator collected at
        exit) it only cancels: closing a channel waits for gRPC's threads,
        which are stopped by then. The atexit hook has closed the channels
        before that point anyway.
        """
        self.cancel()
        channels, self._channels = self._channels, {}
        _open.discard(self)
        if sys.is_finalizing():
            return
        for ch in channels.values():
            ch.close()

    def _channel(self, address: str) -> grpc.Channel:
        ch = self._channels.get(address)
        if ch is not None:
            return ch
        n = self.max_message_bytes
        options: list[tuple[str, int | str]] = [
            ("grpc.max_receive_message_length", n),
            ("grpc.max_send_message_length", n),
            # Reconnect quickly to a loader that restarts: the default
            # first backoff is 1s and grows to 2 minutes.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
            # Notice a vanished loader on a quiet stream; the server
            # permits pings every 10s or more.
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        if self._security.tls:
            if self._security.server_name:
                options.append(("grpc.ssl_target_name_override", self._security.server_name))
            ch = grpc.secure_channel(address, self._security.credentials(), options=options)
        else:
            if self._metadata and not _LOOPBACK.match(address):
                log.warning(
                    "shardstream: sending a token to %s without TLS: anyone on the path can "
                    "read it; set tls=True (or root_certificates)",
                    address,
                )
            ch = grpc.insecure_channel(address, options=options)
        self._channels[address] = ch
        _open.add(self)
        note_grpc_used()
        return ch

    def _coordinator(self) -> _CoordinatorStub:
        stub: _CoordinatorStub = pb_grpc.CoordinatorServiceStub(self._channel(self.address))
        return stub

    def _loader(self, address: str) -> _LoaderStub:
        stub: _LoaderStub = pb_grpc.LoaderServiceStub(self._channel(address))
        return stub

    def _unary(self, method: str, call: Callable[..., _R], *, wait: bool) -> _R:
        """One unary call to the coordinator. With ``wait``, an unreachable
        server is tried again (with backoff) until ``timeout``; a failed
        TLS handshake, an auth error or any other status ends it at once.

        Not gRPC's wait_for_ready: that waits out the whole timeout on a
        handshake that can never succeed (a wrong CA) and then says only
        DEADLINE_EXCEEDED.
        """
        deadline = time.monotonic() + self.timeout
        failures = 0
        while True:
            left = deadline - time.monotonic()
            try:
                return call(timeout=max(left, 0.001), wait_for_ready=False, metadata=self._metadata)
            except grpc.RpcError as e:
                if (
                    wait
                    and isinstance(e, grpc.Call)
                    and e.code() == grpc.StatusCode.UNAVAILABLE
                    and not handshake_failed(e)
                ):
                    failures += 1
                    delay = backoff(failures, self._rng)
                    if time.monotonic() + delay < deadline:
                        time.sleep(delay)
                        continue
                plaintext = not self._security.tls
                raise from_rpc_error(method, self.address, e, plaintext=plaintext) from e

    def _raw_batches(self, address: str, req: pb.StreamBatchesRequest) -> _RawBatchStream:
        # No response deserializer: the bytes come as gRPC received them,
        # and the columnar batch's tensors view them (see _columnar).
        call: _RawBatchStream = self._channel(address).unary_stream(
            _STREAM_BATCHES, request_serializer=pb.StreamBatchesRequest.SerializeToString
        )(req, metadata=self._metadata)
        return call

    @staticmethod
    def _parse(resp: pb.StreamBatchesResponse | bytes, address: str) -> pb.Batch | ColumnarBatch:
        if not isinstance(resp, bytes):
            return resp.batch
        try:
            return parse_response(resp)
        except ColumnarFormatError as e:
            raise ShardStreamError(
                "StreamBatches", address, grpc.StatusCode.FAILED_PRECONDITION, str(e)
            ) from e

    def describe(self, dataset: str) -> DatasetInfo:
        """GetDataset."""
        req = pb.GetDatasetRequest(dataset=dataset)
        r = self._unary(
            "GetDataset", functools.partial(self._coordinator().GetDataset, req), wait=True
        )
        return dataset_info_from_proto(r)

    def plan(self, job: pb.JobSpec, *, wait: bool = True, max_loaders_per_rank: int = 1) -> Plan:
        """PlanEpoch; ``wait`` waits up to ``timeout`` for the server to
        come up instead of failing at once when it is unreachable;
        ``max_loaders_per_rank`` asks for up to that many stripe loaders per
        rank (``Plan.rank_loaders``)."""
        req = pb.PlanEpochRequest(job=job)
        if max_loaders_per_rank > 1:
            req.max_loaders_per_rank = max_loaders_per_rank
        r = self._unary(
            "PlanEpoch", functools.partial(self._coordinator().PlanEpoch, req), wait=wait
        )
        return plan_from_proto(r)

    def batches(
        self,
        plan: Plan,
        job: pb.JobSpec,
        rank: int,
        stats: Stats,
        *,
        first: int = 0,
        stride: int = 1,
        columnar: bool = False,
        stripe: int = 0,
        max_loaders_per_rank: int = 1,
    ) -> Generator[Batch | ColumnarBatch, None, None]:
        """The rank's batches of ``plan`` for steps ``first, first+stride, …``,
        in order, each exactly once.

        A lost stream is reopened from the next step not yet yielded, on the
        planned loader or any other of the plan, with backoff for up to
        ``retry_timeout`` seconds without a batch; before each new attempt
        the coordinator is asked for the plan again, and a changed plan is
        an error. A batch over a message limit is an error at once, with a
        hint. ``stats`` counts what arrives and each reconnect. With
        ``columnar`` the batches are :class:`ColumnarBatch` es whose tensors
        view the received bytes. ``stripe`` picks the stream's loader from
        ``plan.rank_loaders[rank]`` (see :func:`loader_address`), and every
        plan asked for again asks for ``max_loaders_per_rank``, so a stripe
        whose loader died moves to the loader the new plan names for it.
        """
        next_step = first
        attempt = 0
        failures = 0
        stalled_since: float | None = None
        failed: set[str] = set()  # addresses whose stream failed since the last batch
        while next_step < plan.steps and not self._cancelled:
            address = loader_address(plan, rank, attempt, self.address, stripe=stripe, avoid=failed)
            req = pb.StreamBatchesRequest(job=job, rank=rank, from_step=next_step)
            if stride > 1:
                req.stride = stride
            call: _BatchStream | _RawBatchStream
            if columnar:
                req.columnar = True
                call = self._raw_batches(address, req)
            else:
                call = self._loader(address).StreamBatches(req, metadata=self._metadata)
            self._calls.add(call)
            if self._cancelled:  # cancel() ran between the check above and add
                call.cancel()
            watched = self._watchdog.watch(call) if self._watchdog is not None else None
            retry_error: grpc.RpcError | None = None
            try:
                responses: Iterator[pb.StreamBatchesResponse | bytes] = iter(call)
                while True:
                    if watched is not None:
                        watched.waiting()
                    resp = next(responses, None)
                    if watched is not None:
                        watched.received()
                    if resp is None:
                        break
                    b = self._parse(resp, address)
                    if b.step != next_step or b.rank != rank:
                        old = (
                            " (a server without StreamBatchesRequest.stride?)" if stride > 1 else ""
                        )
                        raise ShardStreamError(
                            "StreamBatches",
                            address,
                            grpc.StatusCode.INTERNAL,
                            f"got rank {b.rank} step {b.step}, want rank {rank} step {next_step}"
                            + old,
                        )
                    batch = b if isinstance(b, ColumnarBatch) else batch_from_proto(b)
                    stats.batches += 1
                    stats.samples += len(batch)
                    stats.bytes += b.nbytes if isinstance(b, ColumnarBatch) else field_bytes(b)
                    failures, stalled_since = 0, None
                    failed.clear()
                    next_step += stride
                    yield batch
                if next_step >= plan.steps:
                    return
                why = f"stream ended at step {next_step} of {plan.steps}"
            except grpc.RpcError as e:
                if self._cancelled:
                    return
                hint = too_large_hint(e, self.max_message_bytes)
                if hint is not None:
                    raise ShardStreamError(
                        "StreamBatches", address, grpc.StatusCode.RESOURCE_EXHAUSTED, hint
                    ) from e
                if not _retryable(e):
                    plaintext = not self._security.tls
                    raise from_rpc_error("StreamBatches", address, e, plaintext=plaintext) from e
                retry_error = e
                why = f"{e.code().name}: {e.details()}"
                if watched is not None and watched.expired:
                    # Our own cancel: the reason is the silence, not CANCELLED.
                    retry_error = None
                    why = f"no message for {self.stream_deadline:g}s (stream_deadline)"
            finally:
                call.cancel()
                self._calls.discard(call)
                if watched is not None and self._watchdog is not None:
                    self._watchdog.unwatch(watched)
            now = time.monotonic()
            if stalled_since is None:
                stalled_since = now
            if now - stalled_since > self.retry_timeout:
                if retry_error is not None:
                    raise from_rpc_error("StreamBatches", address, retry_error) from retry_error
                raise ShardStreamError("StreamBatches", address, grpc.StatusCode.UNAVAILABLE, why)
            failures += 1
            attempt += 1
            failed.add(address)
            stats.reconnects += 1
            stats.last_error = why
            delay = backoff(failures, self._rng)
            log.warning(
                "shardstream: rank %d stream %d from %s lost at step %d (%s); reopening in %.2fs",
                rank,
                stripe,
                address,
                next_step,
                why,
                delay,
            )
            time.sleep(delay)
            # Ask again where to read: a restarted coordinator may name
            # other loaders. The same job gives the same plan; a different
            # one means the dataset changed under the job.
            try:
                replan = self.plan(job, wait=False, max_loaders_per_rank=max_loaders_per_rank)
            except ShardStreamError as e:
                if not isinstance(e.__cause__, grpc.RpcError) or not _retryable(e.__cause__):
                    raise
                continue
            if replan.fingerprint != plan.fingerprint or replan.steps != plan.steps:
                raise ShardStreamError(
                    "PlanEpoch",
                    self.address,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"plan changed while reading: dataset {plan.fingerprint} with "
                    f"{plan.steps} steps became {replan.fingerprint} with {replan.steps}",
                )
            plan = replan
