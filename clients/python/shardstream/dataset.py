"""ShardStreamDataset: one trainer rank's batches as a torch IterableDataset.

The client is thin: the coordinator plans the epoch and a loader streams this
rank's batches in order; the client asks for them, turns them into Python
values and remembers the resume token of the last batch it handed over.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import grpc
from torch.utils.data import IterableDataset

from shardstream.errors import ShardStreamError, from_rpc_error
from shardstream.v1 import shardstream_pb2 as pb
from shardstream.v1 import shardstream_pb2_grpc as pb_grpc
from shardstream.world import current_worker, current_world, dist_world

__all__ = [
    "Batch",
    "DatasetInfo",
    "Plan",
    "Sample",
    "ShardStreamDataset",
    "Stats",
    "batch_from_proto",
    "sample_from_proto",
]

log = logging.getLogger("shardstream")

Sample = dict[str, Any]
"""One sample: ``__key__`` (str), ``__shard__`` and ``__index__`` (int: its
identity in the dataset) and one ``bytes`` value per field, by field name."""

_UINT32_MAX = (1 << 32) - 1
_UINT64_MAX = (1 << 64) - 1

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


class Batch(list[Sample]):
    """One step's samples for one rank, in the order the loader sent them.

    ``resume_token`` is the token to checkpoint once every rank has consumed
    this step; ``step`` counts from the point the iteration started at (the
    resume token's point, or the start of the epoch).
    """

    def __init__(
        self, samples: list[Sample], *, rank: int, epoch: int, step: int, resume_token: str
    ) -> None:
        super().__init__(samples)
        self.rank = rank
        self.epoch = epoch
        self.step = step
        self.resume_token = resume_token

    def __repr__(self) -> str:
        return f"Batch(rank={self.rank}, epoch={self.epoch}, step={self.step}, samples={len(self)})"


@dataclass(frozen=True)
class Plan:
    """What the coordinator planned for one rank (from PlanEpoch)."""

    fingerprint: str
    steps: int
    samples: int
    dropped: int
    padded: int
    resume_token: str
    loader_addresses: tuple[str, ...]


@dataclass(frozen=True)
class DatasetInfo:
    """A served dataset (from GetDataset)."""

    name: str
    fingerprint: str
    shards: int
    samples: int
    bytes: int


@dataclass
class Stats:
    """Counters of the iterations run in this process."""

    batches: int = 0
    samples: int = 0
    # Bytes of field data received (keys and framing not counted).
    bytes: int = 0
    # Streams reopened after a failure.
    reconnects: int = 0
    last_error: str = field(default="", repr=False)


def sample_from_proto(s: pb.Sample) -> Sample:
    """Turns a wire Sample into the dict the dataset yields."""
    d: Sample = {"__key__": s.key, "__shard__": s.shard, "__index__": s.index}
    for f in s.fields:
        d[f.name] = f.data
    return d


def batch_from_proto(b: pb.Batch) -> Batch:
    """Turns a wire Batch into a :class:`Batch` of sample dicts."""
    return Batch(
        [sample_from_proto(s) for s in b.samples],
        rank=b.rank,
        epoch=b.epoch,
        step=b.step,
        resume_token=b.resume_token,
    )


def _check_uint(name: str, value: object, limit: int, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: {value!r}, want an int")
    if not minimum <= value <= limit:
        raise ValueError(f"{name}: {value}, must be in [{minimum}, {limit}]")
    return value


_POLICIES: Mapping[str, pb.LastBatchPolicy] = {
    "drop": pb.LAST_BATCH_POLICY_DROP,
    "pad": pb.LAST_BATCH_POLICY_PAD,
}


class ShardStreamDataset(IterableDataset[Any]):
    """This trainer rank's batches of one epoch, streamed from shardstream.

    Each item is one whole batch: a :class:`Batch` (a list of sample dicts,
    see :data:`Sample`), or what ``decode`` makes of it. Use it with
    ``DataLoader(ds, batch_size=None)`` so the DataLoader does not batch
    again, and ``num_workers`` 0 or 1: a rank's stream is one ordered
    sequence, so more workers would either reorder or repeat it (raises).

    Every rank of the job must build the dataset with the same ``seed``,
    ``epoch``, ``batch_size``, ``window``, ``last_batch`` and
    ``resume_token``; the server then gives every rank the same number of
    batches and every sample to exactly one rank (``last_batch="drop"``
    leaves out fewer than ``world_size * batch_size`` samples at the end of
    the epoch, ``"pad"`` repeats as many instead).

    The gRPC channel is opened inside ``__iter__`` (after DataLoader has
    forked its workers: gRPC channels do not survive a fork) and closed when
    the iteration ends. A lost stream (loader restarted, connection reset)
    is reopened from the next step not yet handed over, on the rank's loader
    or any other in the plan, with backoff for up to ``retry_timeout``
    seconds without progress; no batch is lost or repeated. Errors the
    server reports (a bad request, corrupt data) raise
    :class:`~shardstream.ShardStreamError` with the server's message.

    Args:
      address: ``host:port`` of the coordinator (``shardstream serve``).
      seed, epoch: the job's shuffle seed and the epoch to read.
      batch_size: samples per batch per rank.
      window: shards per shuffle window; 0 is the server's default.
      last_batch: ``"drop"`` or ``"pad"``.
      dataset: the served dataset's name; empty for the only one.
      resume_token: start where a checkpoint's token says (see
        :meth:`state_dict`); world size and batch size may differ from the
        run that made it.
      rank, world_size: this rank; by default from torch.distributed, else
        the RANK/WORLD_SIZE environment, else 0 of 1.
      decode: called on every Batch; what it returns is yielded.
      timeout: seconds a PlanEpoch call may take, including waiting for the
        server to come up.
      retry_timeout: seconds to keep reopening a lost stream without
        receiving a batch before giving up.
      max_message_bytes: the largest batch message accepted.
    """

    def __init__(
        self,
        address: str,
        *,
        seed: int = 0,
        epoch: int = 0,
        batch_size: int,
        window: int = 0,
        last_batch: Literal["drop", "pad"] = "drop",
        dataset: str = "",
        resume_token: str | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        decode: Callable[[Batch], Any] | None = None,
        timeout: float = 60.0,
        retry_timeout: float = 60.0,
        max_message_bytes: int = 256 << 20,
    ) -> None:
        super().__init__()
        if not isinstance(address, str) or not address:
            raise ValueError(f"address: {address!r}, want host:port")
        # Range checks only: the wire fields are unsigned. The server
        # validates the job itself (batch_size 0, world size limits, ...).
        self.address = address
        self.seed = _check_uint("seed", seed, _UINT64_MAX)
        self._epoch = _check_uint("epoch", epoch, _UINT64_MAX)
        self.batch_size = _check_uint("batch_size", batch_size, _UINT32_MAX)
        self.window = _check_uint("window", window, _UINT32_MAX)
        if last_batch not in _POLICIES:
            raise ValueError(f"last_batch: {last_batch!r}, want 'drop' or 'pad'")
        self.last_batch = last_batch
        self.dataset = dataset
        if resume_token is not None and not isinstance(resume_token, str):
            raise TypeError(f"resume_token: {type(resume_token).__name__}, want str or None")
        self._token = resume_token or ""
        if rank is not None:
            _check_uint("rank", rank, _UINT32_MAX)
        if world_size is not None:
            _check_uint("world_size", world_size, _UINT32_MAX, minimum=1)
        self.rank = rank
        self.world_size = world_size
        self.decode = decode
        if not timeout > 0 or not retry_timeout >= 0:
            raise ValueError(f"timeout {timeout}, retry_timeout {retry_timeout}: must be positive")
        self.timeout = float(timeout)
        self.retry_timeout = float(retry_timeout)
        self.max_message_bytes = _check_uint(
            "max_message_bytes", max_message_bytes, (1 << 31) - 1, minimum=1
        )
        self.stats = Stats()
        self.last_plan: Plan | None = None
        # torch.distributed's (rank, world size) in the process that pickled
        # this dataset for a DataLoader worker (see __getstate__).
        self._inherited_dist: tuple[int, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # A DataLoader worker started with spawn gets a pickled copy, and
        # torch.distributed is not initialised in it: carry the parent's
        # rank along, or the worker would read as rank 0 of 1.
        state = dict(self.__dict__)
        state["_inherited_dist"] = dist_world() or self._inherited_dist
        return state

    # ---- state ---------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Reads ``epoch`` on the next iteration, from its start.

        Setting the epoch the dataset already has keeps its resume token, so
        ``load_state_dict(ckpt)`` followed by ``set_epoch(ckpt["epoch"])``
        resumes mid-epoch.
        """
        epoch = _check_uint("epoch", epoch, _UINT64_MAX)
        if epoch != self._epoch:
            self._epoch = epoch
            self._token = ""

    def state_dict(self) -> dict[str, Any]:
        """Where this rank stands: the epoch and the resume token of the last
        batch this dataset handed over in this process (not ones prefetched
        from the network). Store it in the checkpoint once every rank has
        consumed that step; the token is the same on every rank.
        """
        return {"resume_token": self._token, "epoch": self._epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continues from a :meth:`state_dict` on the next iteration."""
        token = state.get("resume_token", "")
        if token is None:
            token = ""
        if not isinstance(token, str):
            raise TypeError(f"state_dict resume_token: {type(token).__name__}, want str")
        self._epoch = _check_uint("state_dict epoch", state.get("epoch"), _UINT64_MAX)
        self._token = token

    # ---- requests ------------------------------------------------------

    def job(self, world_size: int) -> pb.JobSpec:
        """The JobSpec this dataset sends for ``world_size`` ranks."""
        return pb.JobSpec(
            dataset=self.dataset,
            seed=self.seed,
            epoch=self._epoch,
            world_size=world_size,
            batch_size=self.batch_size,
            window=self.window,
            last_batch=_POLICIES[self.last_batch],
            resume_token=self._token,
        )

    def _channel(self, address: str) -> grpc.Channel:
        n = self.max_message_bytes
        return grpc.insecure_channel(
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

    def describe(self) -> DatasetInfo:
        """Asks the coordinator about the dataset (GetDataset)."""
        with self._channel(self.address) as ch:
            stub = pb_grpc.CoordinatorServiceStub(ch)
            try:
                r = stub.GetDataset(
                    pb.GetDatasetRequest(dataset=self.dataset),
                    timeout=self.timeout,
                    wait_for_ready=True,
                )
            except grpc.RpcError as e:
                raise from_rpc_error("GetDataset", self.address, e) from e
        return DatasetInfo(
            name=r.name,
            fingerprint=r.fingerprint,
            shards=r.shards,
            samples=r.samples,
            bytes=r.bytes,
        )

    def plan(self) -> Plan:
        """Asks the coordinator for this rank's plan (PlanEpoch) without
        streaming anything."""
        world = current_world(self.rank, self.world_size, self._inherited_dist)
        with self._channel(self.address) as ch:
            return self._plan(pb_grpc.CoordinatorServiceStub(ch), self.job(world.world_size))

    def _plan(self, stub: Any, job: pb.JobSpec, *, wait: bool = True) -> Plan:
        """PlanEpoch; ``wait`` waits up to ``timeout`` for the server to
        come up instead of failing at once when it is unreachable."""
        try:
            r = stub.PlanEpoch(
                pb.PlanEpochRequest(job=job), timeout=self.timeout, wait_for_ready=wait
            )
        except grpc.RpcError as e:
            raise from_rpc_error("PlanEpoch", self.address, e) from e
        return Plan(
            fingerprint=r.dataset_fingerprint,
            steps=r.steps,
            samples=r.samples,
            dropped=r.dropped,
            padded=r.padded,
            resume_token=r.resume_token,
            loader_addresses=tuple(r.loader_addresses),
        )

    # ---- iteration -----------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        worker, workers = current_worker()
        if workers > 1:
            raise RuntimeError(
                f"ShardStreamDataset in DataLoader worker {worker} of {workers}: a rank's "
                "batches are one ordered stream, use num_workers=0 or 1 "
                "(the loader service does the reading and decompression)"
            )
        world = current_world(self.rank, self.world_size, self._inherited_dist)
        return self._iterate(world.rank, world.world_size)

    def _iterate(self, rank: int, world_size: int) -> Iterator[Any]:
        job = self.job(world_size)
        channels: dict[str, grpc.Channel] = {}

        def stub_for(address: str) -> Any:
            if address not in channels:
                channels[address] = self._channel(address)
            return channels[address]

        try:
            coordinator = pb_grpc.CoordinatorServiceStub(stub_for(self.address))
            plan = self._plan(coordinator, job)
            self.last_plan = plan
            if plan.steps == 0 and job.resume_token:
                log.warning(
                    "shardstream: epoch %d has no steps left after the resume token; "
                    "call set_epoch() for the next epoch",
                    job.epoch,
                )
            yield from self._stream(plan, job, rank, coordinator, stub_for)
        finally:
            for ch in channels.values():
                ch.close()

    def _loader_address(self, plan: Plan, rank: int, attempt: int) -> str:
        """The loader for ``rank`` on its ``attempt``-th stream: the planned
        one first, then the others of the plan in turn (loaders are
        stateless, any of them serves any rank)."""
        addrs = [a or self.address for a in plan.loader_addresses]
        first = addrs[rank] if rank < len(addrs) else self.address
        order = [first, *sorted(set(addrs) - {first})]
        return order[attempt % len(order)]

    def _stream(
        self,
        plan: Plan,
        job: pb.JobSpec,
        rank: int,
        coordinator: Any,
        channel_for: Callable[[str], grpc.Channel],
    ) -> Iterator[Any]:
        next_step = 0
        attempt = 0
        failures = 0
        stalled_since: float | None = None
        while next_step < plan.steps:
            address = self._loader_address(plan, rank, attempt)
            loader = pb_grpc.LoaderServiceStub(channel_for(address))
            req = pb.StreamBatchesRequest(job=job, rank=rank, from_step=next_step)
            call = loader.StreamBatches(req)
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
                    self.stats.batches += 1
                    self.stats.samples += len(batch)
                    self.stats.bytes += sum(len(f.data) for s in b.samples for f in s.fields)
                    failures, stalled_since = 0, None
                    next_step += 1
                    item = batch if self.decode is None else self.decode(batch)
                    # The token changes only as a batch is handed over, so
                    # state_dict() never counts a batch the trainer has not
                    # had (a decode error leaves it at the previous batch).
                    self._token = b.resume_token
                    yield item
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
            self.stats.reconnects += 1
            self.stats.last_error = why
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
                replan = self._plan(coordinator, job, wait=False)
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
