"""The gRPC client: channels, the three RPCs and the reconnect loop.

A :class:`Client` is made inside the dataset's iteration (after DataLoader
has forked its workers: gRPC channels must not cross a fork) and opens a
channel per address the first time it is needed; :meth:`Client.close`
closes them all.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Generator, Iterator
from types import TracebackType
from typing import Protocol

import grpc

from shardstream._convert import (
    batch_from_proto,
    dataset_info_from_proto,
    field_bytes,
    plan_from_proto,
)
from shardstream.errors import ShardStreamError, from_rpc_error
from shardstream.types import Batch, DatasetInfo, Plan, Stats
from shardstream.v1 import shardstream_pb2 as pb
from shardstream.v1 import shardstream_pb2_grpc as pb_grpc

__all__ = ["Client", "loader_address"]

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


class _CoordinatorStub(Protocol):
    def GetDataset(  # noqa: N802 - the RPC's name
        self, request: pb.GetDatasetRequest, *, timeout: float, wait_for_ready: bool
    ) -> pb.GetDatasetResponse: ...

    def PlanEpoch(  # noqa: N802 - the RPC's name
        self, request: pb.PlanEpochRequest, *, timeout: float, wait_for_ready: bool
    ) -> pb.PlanEpochResponse: ...


class _LoaderStub(Protocol):
    def StreamBatches(self, request: pb.StreamBatchesRequest) -> _BatchStream: ...  # noqa: N802


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
    if not isinstance(err, grpc.Call):
        return False
    code = err.code()
    if code in _RETRYABLE:
        return True
    # grpc-core reports a peer's HTTP/2 stream reset (a loader killed or
    # force-stopped mid-stream) as INTERNAL; the request itself was fine.
    return code == grpc.StatusCode.INTERNAL and "RST_STREAM" in (err.details() or "")


def loader_address(plan: Plan, rank: int, attempt: int, coordinator: str) -> str:
    """The loader for ``rank`` on its ``attempt``-th stream: the planned one
    first, then the others of the plan in turn (loaders are stateless, any of
    them serves any rank). An empty address in the plan, or none for the
    rank, means the coordinator's own (the embedded server)."""
    addrs = [a or coordinator for a in plan.loader_addresses]
    first = addrs[rank] if rank < len(addrs) else coordinator
    order = [first, *sorted(set(addrs) - {first})]
    return order[attempt % len(order)]


# ---- the client ------------------------------------------------------------


class Client:
    """Connections to one coordinator and the loaders its plans name.

    Args:
      address: ``host:port`` of the coordinator.
      timeout: seconds a unary call may take, waiting for the server
        included.
      retry_timeout: seconds to keep reopening a lost stream without
        receiving a batch.
      max_message_bytes: the largest message sent or received.
    """

    def __init__(
        self, address: str, *, timeout: float, retry_timeout: float, max_message_bytes: int
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.retry_timeout = retry_timeout
        self.max_message_bytes = max_message_bytes
        self._channels: dict[str, grpc.Channel] = {}

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes every channel; calls still running on them are cancelled."""
        channels, self._channels = self._channels, {}
        for ch in channels.values():
            ch.close()

    def _channel(self, address: str) -> grpc.Channel:
        ch = self._channels.get(address)
        if ch is not None:
            return ch
        n = self.max_message_bytes
        ch = grpc.insecure_channel(
            address,
            options=[
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
            ],
        )
        self._channels[address] = ch
        return ch

    def _coordinator(self) -> _CoordinatorStub:
        stub: _CoordinatorStub = pb_grpc.CoordinatorServiceStub(self._channel(self.address))
        return stub

    def _loader(self, address: str) -> _LoaderStub:
        stub: _LoaderStub = pb_grpc.LoaderServiceStub(self._channel(address))
        return stub

    def describe(self, dataset: str) -> DatasetInfo:
        """GetDataset."""
        try:
            r = self._coordinator().GetDataset(
                pb.GetDatasetRequest(dataset=dataset), timeout=self.timeout, wait_for_ready=True
            )
        except grpc.RpcError as e:
            raise from_rpc_error("GetDataset", self.address, e) from e
        return dataset_info_from_proto(r)

    def plan(self, job: pb.JobSpec, *, wait: bool = True) -> Plan:
        """PlanEpoch; ``wait`` waits up to ``timeout`` for the server to
        come up instead of failing at once when it is unreachable."""
        try:
            r = self._coordinator().PlanEpoch(
                pb.PlanEpochRequest(job=job), timeout=self.timeout, wait_for_ready=wait
            )
        except grpc.RpcError as e:
            raise from_rpc_error("PlanEpoch", self.address, e) from e
        return plan_from_proto(r)

    def batches(
        self, plan: Plan, job: pb.JobSpec, rank: int, stats: Stats
    ) -> Generator[Batch, None, None]:
        """The rank's batches of ``plan``, in order, each exactly once.

        A lost stream is reopened from the next step not yet yielded, on the
        planned loader or any other of the plan, with backoff for up to
        ``retry_timeout`` seconds without a batch; before each new attempt
        the coordinator is asked for the plan again, and a changed plan is
        an error. ``stats`` counts what arrives and each reconnect.
        """
        next_step = 0
        attempt = 0
        failures = 0
        stalled_since: float | None = None
        while next_step < plan.steps:
            address = loader_address(plan, rank, attempt, self.address)
            req = pb.StreamBatchesRequest(job=job, rank=rank, from_step=next_step)
            call = self._loader(address).StreamBatches(req)
            retry_error: grpc.RpcError | None = None
            try:
                for resp in call:
                    b = resp.batch
                    if b.step != next_step or b.rank != rank:
                        raise ShardStreamError(
                            "StreamBatches",
                            address,
                            grpc.StatusCode.INTERNAL,
                            f"got rank {b.rank} step {b.step}, want rank {rank} step {next_step}",
                        )
                    batch = batch_from_proto(b)
                    stats.batches += 1
                    stats.samples += len(batch)
                    stats.bytes += field_bytes(b)
                    failures, stalled_since = 0, None
                    next_step += 1
                    yield batch
                if next_step >= plan.steps:
                    return
                why = f"stream ended at step {next_step} of {plan.steps}"
            except grpc.RpcError as e:
                if not _retryable(e):
                    raise from_rpc_error("StreamBatches", address, e) from e
                retry_error = e
                why = f"{e.code().name}: {e.details()}"
            finally:
                call.cancel()
            now = time.monotonic()
            if stalled_since is None:
                stalled_since = now
            if now - stalled_since > self.retry_timeout:
                if retry_error is not None:
                    raise from_rpc_error("StreamBatches", address, retry_error) from retry_error
                raise ShardStreamError("StreamBatches", address, grpc.StatusCode.UNAVAILABLE, why)
            failures += 1
            attempt += 1
            stats.reconnects += 1
            stats.last_error = why
            delay = min(2.0, 0.05 * math.pow(2, min(failures, 10)))
            log.warning(
                "shardstream: rank %d stream from %s lost at step %d (%s); reopening in %.2fs",
                rank,
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
                replan = self.plan(job, wait=False)
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
