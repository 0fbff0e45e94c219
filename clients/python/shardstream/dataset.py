"""ShardStreamDataset: one trainer rank's batches as a torch IterableDataset.

The client is thin: the coordinator plans the epoch and a loader streams this
rank's batches in order; the client asks for them, turns them into Python
values and remembers the resume token of the last batch it handed over.

This module holds the dataset only: the values it yields are in
:mod:`shardstream.types`, the gRPC calls and the reconnect loop in
:mod:`shardstream._client`, the wire conversion in :mod:`shardstream._convert`.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import closing
from typing import TYPE_CHECKING, Any, Literal

from torch.utils.data import IterableDataset, get_worker_info

from shardstream._client import Client, Security
from shardstream._columnar import ColumnarBatch
from shardstream._convert import LAST_BATCH_POLICIES, job_spec

# Kept importable from here for code written against the one-module client
# (and for pickles that name shardstream.dataset.Batch or .Stats); not part of
# this module's __all__.
from shardstream._convert import batch_from_proto as batch_from_proto
from shardstream._convert import sample_from_proto as sample_from_proto
from shardstream._prefetch import Prefetcher
from shardstream._progress import check_job_name
from shardstream._state import WorkerPosition, resume_state
from shardstream._watch import live_batches
from shardstream.decoders import Decoders
from shardstream.decoders import collate as default_collate
from shardstream.types import Batch as Batch
from shardstream.types import DatasetInfo as DatasetInfo
from shardstream.types import Plan as Plan
from shardstream.types import Sample as Sample
from shardstream.types import Stats as Stats
from shardstream.world import current_worker, current_world, dist_world

if TYPE_CHECKING:
    from shardstream.v1 import shardstream_pb2 as pb

__all__ = ["ShardStreamDataset"]

log = logging.getLogger("shardstream")

_UINT32_MAX = (1 << 32) - 1
_UINT64_MAX = (1 << 64) - 1

# What the receiving side of an iteration hands over per batch: its step (from
# the stream's token), its resume token and the decoded item.
_Ready = tuple[int, str, Any]


_ENV_CA = "SHARDSTREAM_TLS_CA"
_ENV_CERT = "SHARDSTREAM_TLS_CERT"
_ENV_KEY = "SHARDSTREAM_TLS_KEY"
_ENV_TOKEN = "SHARDSTREAM_TOKEN"
_ENV_SERVER_NAME = "SHARDSTREAM_TLS_SERVER_NAME"
# A DNS name as a certificate's subjectAltName carries it (a wildcard first
# label allowed): what tls_server_name may be.
_SERVER_NAME = re.compile(
    r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def _path_arg(name: str, value: str | os.PathLike[str] | None, env: str) -> str | None:
    """A certificate argument: its path, else the environment's, else None;
    the file must exist (a typo fails here, not in a DataLoader worker)."""
    src = name
    if value is None:
        value = os.environ.get(env) or None
        src = f"${env}"
    if value is None:
        return None
    path = os.fspath(value)
    if not isinstance(path, str):
        raise TypeError(f"{src}: {type(value).__name__}, want a path (str or os.PathLike)")
    if not os.path.isfile(path):
        raise ValueError(f"{src}: {path!r}: no such file")
    return path


class _Secret:
    """A bearer token that does not show itself: repr and str hide it, so a
    dataset's ``vars()``, a traceback's locals or a debug log print
    ``<token>``. It pickles (DataLoader workers need it)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<token>"

    __str__ = __repr__

    def __getstate__(self) -> str:
        return self.value

    def __setstate__(self, state: str) -> None:
        self.value = state

    @staticmethod
    def check(token: object, name: str = "token") -> _Secret:
        # The message never holds the token: only its type or what is wrong.
        if not isinstance(token, str):
            raise TypeError(f"{name}: {type(token).__name__}, want str")
        if not token or any(c.isspace() or not c.isprintable() for c in token):
            raise ValueError(f"{name}: empty, or holds spaces or control characters")
        return _Secret(token)


def _check_uint(name: str, value: object, limit: int, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: {value!r}, want an int")
    if not minimum <= value <= limit:
        raise ValueError(f"{name}: {value}, must be in [{minimum}, {limit}]")
    return value


def _pipeline(
    decode: object, transform: object, collate: object, columnar: bool
) -> tuple[Decoders | None, Callable[[Any], Any] | None, Callable[[Any], Any] | None]:
    """Checks decode, transform and collate: (field decoders, per-batch
    callable, collate)."""
    decoders: Decoders | None = None
    per_batch: Callable[[Any], Any] | None = None
    if isinstance(decode, str):
        if decode != "auto":
            raise ValueError(f"decode: {decode!r}, want 'auto', a Decoders, a callable or None")
        decoders = Decoders()
    elif isinstance(decode, Decoders):
        decoders = decode
    elif callable(decode):
        per_batch = decode
    elif decode is not None:
        raise TypeError(f"decode: {type(decode).__name__}, want 'auto', a Decoders or a callable")
    if transform is not None and not callable(transform):
        raise TypeError(f"transform: {type(transform).__name__}, want a callable")
    fn: Callable[[Any], Any] | None
    if collate is True:
        fn = default_collate
    elif collate is False or collate is None:
        fn = None
    elif callable(collate):
        fn = collate
    else:
        raise TypeError(f"collate: {type(collate).__name__}, want a bool or a callable")
    per_sample = decoders is not None or transform is not None or fn is not None
    if per_batch is not None and (transform is not None or fn is not None):
        raise ValueError(
            "decode: a callable decodes the whole batch; give transform= and collate= "
            "with decode='auto' (or a Decoders), or do it all in the callable"
        )
    if columnar and per_sample:
        raise ValueError(
            "decode='auto', transform and collate work on sample dicts, not columnar=True "
            "batches; use a decode callable on the ColumnarBatch"
        )
    return decoders, per_batch, fn


class ShardStreamDataset(IterableDataset[Any]):
    """This trainer rank's batches of one epoch, streamed from shardstream.

    Each item is one whole batch: a :class:`Batch` (a list of sample dicts,
    see :data:`Sample`), or what ``decode`` makes of it. Use it with
    ``DataLoader(ds, batch_size=None)`` so the DataLoader does not batch
    again, or with :class:`~shardstream.ShardStreamLoader`, which also keeps
    :meth:`state_dict` current in the main process. Any ``num_workers``
    gives the same batches in the same order: DataLoader worker ``w`` of
    ``N`` streams the steps ``w, w+N, …`` (a strided stream) and
    DataLoader's in-order round robin puts them back in sequence.
    ``len(ds)`` is the number of batches this rank gets (see
    :meth:`__len__`).

    Every rank of the job must build the dataset with the same ``seed``,
    ``epoch``, ``batch_size``, ``window``, ``last_batch`` and
    ``resume_token``; the server then gives every rank the same number of
    batches and every sample to exactly one rank (``last_batch="drop"``
    leaves out fewer than ``world_size * batch_size`` samples at the end of
    the epoch, ``"pad"`` repeats as many instead).

    The gRPC channel is opened inside ``__iter__`` (after DataLoader has
    forked its workers: gRPC channels do not survive a fork) and closed when
    the iteration ends, when its iterator is dropped or collected, or at
    interpreter exit, so a script that stops early still exits. A lost
    stream (loader restarted, connection reset) is reopened from the next
    step not yet handed over, on the rank's loader or any other in the
    plan, with backoff (with jitter) for up to ``retry_timeout`` seconds
    without progress; no batch is lost or repeated. Errors the
    server reports (a bad request, corrupt data) raise
    :class:`~shardstream.ShardStreamError` with the server's message.

    Args:
      address: ``host:port`` of the coordinator (``shardstream serve``).
      seed, epoch: the job's shuffle seed and the epoch to read.
      batch_size: samples per batch per rank.
      window: chunks (the manifest's ~8 MiB units) per shuffle window; 0 is the
        server's default (8).
      last_batch: ``"drop"`` or ``"pad"``.
      dataset: the served dataset's name; empty for the only one.
      resume_token: start where a checkpoint's token says (see
        :meth:`state_dict`); world size and batch size may differ from the
        run that made it.
      rank, world_size: this rank; by default from torch.distributed, else
        the RANK/WORLD_SIZE environment, else 0 of 1.
      decode: how batches are decoded. ``"auto"`` (or a
        :class:`~shardstream.Decoders`, to configure it) decodes each
        sample's fields by their extension (npy, json, cls, txt, raw token
        arrays, images; see :class:`~shardstream.Decoders`); unknown
        extensions stay bytes. A callable is called on every Batch (or
        ColumnarBatch) instead and what it returns is yielded (it cannot be
        combined with ``transform`` or ``collate``).
      transform: called on every sample dict after its fields are decoded;
        what it returns takes the sample's place in the batch.
      collate: called on every batch (a :class:`Batch` of decoded,
        transformed samples) and what it returns is yielded; ``True`` is
        :func:`shardstream.collate` (a dict of stacked tensors where shapes
        agree, lists otherwise).
      columnar: yield :class:`~shardstream.ColumnarBatch` es, each field one
        tensor over the received bytes, instead of :class:`Batch` es of
        sample dicts (``batch.samples()`` gives those back). Not the default:
        the items differ, so code written for sample dicts would break.
      timeout: seconds a PlanEpoch call may take, including waiting for the
        server to come up.
      retry_timeout: seconds to keep reopening a lost stream without
        receiving a batch before giving up.
      max_message_bytes: the largest batch message accepted.
      tls: connect with TLS. Implied by any of the three certificate
        arguments; with no ``root_certificates`` the server is verified
        against the system's roots.
      root_certificates: path of a PEM file with the CA(s) that sign the
        server's certificate; default ``$SHARDSTREAM_TLS_CA``.
      client_cert, client_key: paths of the PEM certificate and key this
        client shows for mutual TLS (a server with ``--client-ca``);
        default ``$SHARDSTREAM_TLS_CERT`` and ``$SHARDSTREAM_TLS_KEY``.
        Both or neither.
      tls_server_name: the name every server's certificate is checked
        against instead of the host in the address dialled; default
        ``$SHARDSTREAM_TLS_SERVER_NAME``; implies ``tls``. For loaders that
        join the pool by pod IP (the chart's loader Deployment): give the
        coordinator and the loaders one certificate naming, e.g., the
        loader Service's DNS name, and pass that name here.
      token: the bearer token for a server with ``--auth-file``, sent as
        ``authorization: Bearer TOKEN`` on every call; default
        ``$SHARDSTREAM_TOKEN``, read when the channel opens.
      max_loaders_per_rank: stream this rank from up to this many loaders
        of the coordinator's pool at once (1 to 1024; sent in
        ``PlanEpochRequest.max_loaders_per_rank``). With K > 1 addresses in the plan,
        stream j of K reads the steps ``w + j*N``, every ``K*N``-th (``w``
        of ``N`` DataLoader workers), and their batches are taken in turn,
        so the order is that of one stream; a stripe whose loader dies is
        reopened from its next step on the loader a new plan names. Against
        a ``shardstream coordinator`` the rank also watches its assignment
        (WatchAssignment) and moves its stripes, at the next step, to the
        loaders the coordinator rebalances them to (one joined, drained or
        died).
      job_name: the job's name in the coordinator's progress metrics
        (``shardstream_job_*{job=...}``) and ``shardstream status``: 1 to
        128 characters of ``[A-Za-z0-9_.:/-]``; default the dataset's name.
        Every rank reports, about once a second from a background thread,
        the steps it took and how long it waited for their batches.
      prefetch: batches received and decoded ahead of the training loop by
        a background thread (0: none, everything happens in ``next()``).
        At most this many wait beyond what gRPC's flow control buffers; a
        slow loop stops the thread, which slows the loader. The resume
        token stays that of the last batch handed over.
      stream_deadline: seconds the client may wait for a stream's next
        message before the stream is cancelled and reopened from its next
        step (as after a lost stream); the clock runs only while the client
        waits, so a slow training step never trips it. None: never.
      auto_epoch: each ``__iter__`` after one that ran to the end of the
        epoch reads the next epoch (``set_epoch(epoch + 1)``); one that
        stopped early resumes where it stopped. With DataLoader workers
        only :class:`~shardstream.ShardStreamLoader` sees the end of the
        epoch (it decides in the main process, for every worker).

    The certificate arguments are paths, not bytes: the files are read
    each time a channel opens (every ``__iter__``, in each DataLoader
    worker), so certificates that cert-manager rotates are picked up at
    the next epoch, and a pickled dataset holds no key. A ``token=``
    argument is kept in the object (DataLoader workers get it through
    the pickle of the dataset) but never in its repr, in log lines or in
    errors; a token from ``$SHARDSTREAM_TOKEN`` is not stored at all.
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
        decode: Literal["auto"] | Decoders | Callable[[Any], Any] | None = None,
        transform: Callable[[Any], Any] | None = None,
        collate: bool | Callable[[Any], Any] = False,
        columnar: bool = False,
        timeout: float = 60.0,
        retry_timeout: float = 60.0,
        max_message_bytes: int = 256 << 20,
        tls: bool = False,
        root_certificates: str | os.PathLike[str] | None = None,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        token: str | None = None,
        tls_server_name: str | None = None,
        max_loaders_per_rank: int = 1,
        job_name: str | None = None,
        prefetch: int = 2,
        stream_deadline: float | None = 60.0,
        auto_epoch: bool = False,
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
        if last_batch not in LAST_BATCH_POLICIES:
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
        self.columnar = bool(columnar)
        self.transform = transform
        self.collate = collate
        self._decoders, self._per_batch, self._collate = _pipeline(
            decode, transform, collate, self.columnar
        )
        if not timeout > 0 or not retry_timeout >= 0:
            raise ValueError(f"timeout {timeout}, retry_timeout {retry_timeout}: must be positive")
        self.timeout = float(timeout)
        self.retry_timeout = float(retry_timeout)
        self.max_message_bytes = _check_uint(
            "max_message_bytes", max_message_bytes, (1 << 31) - 1, minimum=1
        )
        self.root_certificates = _path_arg("root_certificates", root_certificates, _ENV_CA)
        self.client_cert = _path_arg("client_cert", client_cert, _ENV_CERT)
        self.client_key = _path_arg("client_key", client_key, _ENV_KEY)
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError(
                f"client_cert {self.client_cert!r}, client_key {self.client_key!r}: "
                f"give both or neither (or ${_ENV_CERT} and ${_ENV_KEY})"
            )
        if tls_server_name is None:
            tls_server_name = os.environ.get(_ENV_SERVER_NAME) or None
        if tls_server_name is not None and (
            not isinstance(tls_server_name, str)
            or len(tls_server_name) > 253
            or not _SERVER_NAME.match(tls_server_name)
        ):
            raise ValueError(f"tls_server_name: {tls_server_name!r}, want a DNS name")
        self.tls_server_name = tls_server_name
        self.tls = (
            bool(tls)
            or tls_server_name is not None
            or any(
                p is not None for p in (self.root_certificates, self.client_cert, self.client_key)
            )
        )
        self._auth = _Secret.check(token) if token is not None else None
        self.max_loaders_per_rank = _check_uint(
            "max_loaders_per_rank", max_loaders_per_rank, 1024, minimum=1
        )
        self.job_name = check_job_name(job_name)
        self.prefetch = _check_uint("prefetch", prefetch, 1 << 16)
        if stream_deadline is not None and (
            isinstance(stream_deadline, bool) or not isinstance(stream_deadline, (int, float))
        ):
            raise TypeError(f"stream_deadline: {stream_deadline!r}, want seconds or None")
        if stream_deadline is not None and not stream_deadline > 0:
            raise ValueError(f"stream_deadline: {stream_deadline}, must be positive (or None)")
        self.stream_deadline = None if stream_deadline is None else float(stream_deadline)
        self.auto_epoch = bool(auto_epoch)
        # An iteration in this process ran to the end of the epoch (see
        # auto_epoch); cleared by set_epoch, load_state_dict and each start.
        self._epoch_done = False
        self.stats = Stats()
        self.last_plan: Plan | None = None
        # torch.distributed's (rank, world size) in the process that pickled
        # this dataset for a DataLoader worker (see __getstate__).
        self._inherited_dist: tuple[int, int] | None = None
        # The last plan __len__ asked for, by (job, rank): len() is asked
        # often (tqdm, DataLoader) and the plan changes only with the job.
        self._len_plan: tuple[bytes, int, Plan] | None = None
        # In a DataLoader worker: where this worker stands (see
        # shardstream._state), for StatefulDataLoader's per-worker state;
        # set by load_state_dict to one worker's state to resume it.
        self._worker_pos: WorkerPosition | None = None

    def __getstate__(self) -> dict[str, Any]:
        # A DataLoader worker started with spawn gets a pickled copy, and
        # torch.distributed is not initialised in it: carry the parent's
        # rank along, or the DataLoader worker would read as rank 0 of 1.
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
        self._epoch_done = False  # an explicit epoch beats auto_epoch
        if epoch != self._epoch:
            self._epoch = epoch
            self._token = ""
            self._worker_pos = None

    def state_dict(self) -> dict[str, Any]:
        """Where this rank stands: the epoch and the resume token of the last
        batch this dataset handed over in this process (not ones prefetched
        from the network). Store it in the checkpoint once every rank has
        consumed that step; the token is the same on every rank.

        With DataLoader workers the batches are handed over in the worker
        processes, so this object in the main process does not see them:
        iterate a :class:`~shardstream.ShardStreamLoader`, which records
        each batch's token here as the training loop takes it, use
        torchdata's ``StatefulDataLoader`` (its ``state_dict()`` holds each
        worker's state, see :meth:`load_state_dict`), or take
        ``batch.resume_token`` from the batches yourself.

        In a DataLoader worker (where StatefulDataLoader asks) it is that
        worker's own position: ``{"epoch", "worker": {...}}``, with no
        ``resume_token``, since one worker does not know where the rank
        stands.
        """
        if get_worker_info() is not None:
            return self._position().state()
        return {"resume_token": self._token, "epoch": self._epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continues from a saved state on the next iteration.

        ``state`` is a :meth:`state_dict` of the main process, or a whole
        ``StatefulDataLoader.state_dict()`` over this dataset (any
        ``num_workers``): the workers' states in it are merged into the
        token of the last step the training loop took, so it resumes with
        any ``num_workers`` and any world size. One worker's own state
        (what ``StatefulDataLoader.load_state_dict`` hands each worker)
        resumes that worker where it stood; it needs the same
        ``num_workers`` and world size.
        """
        self._epoch_done = False
        if "worker" in state:
            pos = WorkerPosition.parse(state)
            if pos.workers > 1:
                self._epoch = _check_uint("state_dict epoch", pos.epoch, _UINT64_MAX)
                self._token = pos.start_token
                self._worker_pos = pos
                return
        merged = resume_state(state)
        self._epoch = _check_uint("state_dict epoch", merged["epoch"], _UINT64_MAX)
        self._token = merged["resume_token"]
        self._worker_pos = None

    def _position(self) -> WorkerPosition:
        """This DataLoader worker's position: the loaded or current one, or
        the start of an iteration from the dataset's token."""
        if self._worker_pos is not None:
            return self._worker_pos
        worker, workers = current_worker()
        world = current_world(self.rank, self.world_size, self._inherited_dist)
        return WorkerPosition(
            self._epoch, self._token, worker, workers, world.world_size, 0, self._token
        )

    # ---- requests ------------------------------------------------------

    def job(self, world_size: int) -> pb.JobSpec:
        """The JobSpec this dataset sends for ``world_size`` ranks."""
        return job_spec(
            dataset=self.dataset,
            seed=self.seed,
            epoch=self._epoch,
            world_size=world_size,
            batch_size=self.batch_size,
            window=self.window,
            last_batch=self.last_batch,
            resume_token=self._token,
        )

    def __repr__(self) -> str:
        # No token here, ever: at most whether one is set.
        auth = "token" if self._auth is not None else "env" if os.environ.get(_ENV_TOKEN) else None
        return (
            f"ShardStreamDataset({self.address!r}, dataset={self.dataset!r}, seed={self.seed}, "
            f"epoch={self._epoch}, batch_size={self.batch_size}, tls={self.tls}, "
            f"token={'<set: ' + auth + '>' if auth else None})"
        )

    def _security(self) -> Security:
        """TLS material and token, read now (in the process that opens
        the channel)."""

        def read(p: str | None) -> bytes | None:
            if p is None:
                return None
            with open(p, "rb") as f:
                return f.read()

        token = self._auth.value if self._auth is not None else os.environ.get(_ENV_TOKEN)
        if token is not None:
            token = _Secret.check(token, _ENV_TOKEN if self._auth is None else "token").value
        return Security(
            tls=self.tls,
            root_certificates=read(self.root_certificates),
            client_cert=read(self.client_cert),
            client_key=read(self.client_key),
            token=token,
            server_name=self.tls_server_name,
        )

    def _client(self) -> Client:
        return Client(
            self.address,
            timeout=self.timeout,
            retry_timeout=self.retry_timeout,
            max_message_bytes=self.max_message_bytes,
            security=self._security(),
            stream_deadline=self.stream_deadline,
        )

    def describe(self) -> DatasetInfo:
        """Asks the coordinator about the dataset (GetDataset)."""
        with self._client() as client:
            return client.describe(self.dataset)

    def plan(self) -> Plan:
        """Asks the coordinator for this rank's plan (PlanEpoch) without
        streaming anything."""
        world = current_world(self.rank, self.world_size, self._inherited_dist)
        with self._client() as client:
            return client.plan(
                self.job(world.world_size), max_loaders_per_rank=self.max_loaders_per_rank
            )

    def __len__(self) -> int:
        """The number of batches this rank gets from the current point: the
        whole epoch, or what is left of it after the resume token. The same
        on every rank, and with any number of DataLoader workers (it is the
        rank's total, not a worker's share).

        It asks the coordinator (PlanEpoch) the first time for each epoch
        and token; gRPC then runs in the calling process, so start DataLoader
        workers with ``multiprocessing_context=shardstream.worker_context()``
        (see the docs). With ``auto_epoch`` it is the length of what the
        next iteration reads: after a finished epoch, the next one (the
        epoch moves now rather than at ``__iter__``).
        """
        if self.auto_epoch:
            self._start_epoch()
        return self._steps_left()

    def _steps_left(self) -> int:
        world = current_world(self.rank, self.world_size, self._inherited_dist)
        key = self.job(world.world_size).SerializeToString(deterministic=True)
        if self._len_plan is None or self._len_plan[:2] != (key, world.rank):
            self._len_plan = (key, world.rank, self.plan())
        return self._len_plan[2].steps

    # ---- iteration -----------------------------------------------------

    def _process(self, batch: Batch | ColumnarBatch) -> Any:
        """A received batch to the item yielded: decode by extension, then
        transform each sample, then collate; or the per-batch callable."""
        if self._per_batch is not None:
            return self._per_batch(batch)
        if self._decoders is None and self.transform is None and self._collate is None:
            return batch
        assert isinstance(batch, Batch)  # columnar refused in __init__
        samples: list[Any] = list(batch)
        if self._decoders is not None:
            samples = [self._decoders(s) for s in samples]
        if self.transform is not None:
            samples = [self.transform(s) for s in samples]
        out = Batch(
            samples,
            rank=batch.rank,
            epoch=batch.epoch,
            step=batch.step,
            resume_token=batch.resume_token,
        )
        return out if self._collate is None else self._collate(out)

    def __iter__(self) -> Iterator[Any]:
        return self._items(with_token=False)

    def _start_epoch(self) -> None:
        """With ``auto_epoch``, moves to the next epoch if the last
        iteration in this process read this one to its end. Called as an
        iteration starts in the main process (by ShardStreamLoader before
        it starts its workers), never in a DataLoader worker: every
        worker's copy then holds the epoch the main process chose."""
        # A token with no steps left (a checkpoint taken after the last
        # batch) is a finished epoch too: ask the coordinator (once per
        # token: __len__ caches the plan).
        if self.auto_epoch and (self._epoch_done or (self._token and self._steps_left() == 0)):
            self.set_epoch(self._epoch + 1)
        self._epoch_done = False

    def _items(self, *, with_token: bool) -> Iterator[Any]:
        """The items of __iter__, or with ``with_token`` (token, item) pairs
        for ShardStreamLoader, which records the token (and the data wait)
        in the main process."""
        in_worker = get_worker_info() is not None
        if not in_worker:
            self._start_epoch()
        worker, workers = current_worker()
        world = current_world(self.rank, self.world_size, self._inherited_dist)
        return self._iterate(world.rank, world.world_size, worker, workers, with_token, in_worker)

    def _iterate(
        self,
        rank: int,
        world_size: int,
        worker: int,
        workers: int,
        with_token: bool,
        in_worker: bool,
    ) -> Iterator[Any]:
        # A generator: the client and its channels are made at the first
        # next(), in the process that iterates, never before a fork.
        asked = time.monotonic()
        job = self.job(world_size)
        pos = self._start_position(rank, world_size, worker, workers, in_worker)
        first, offset = worker, 0
        if pos is not None:
            job.resume_token, first = pos.resume()
            offset = pos.steps
        with self._client() as client:
            plan = client.plan(job, max_loaders_per_rank=self.max_loaders_per_rank)
            self.last_plan = plan
            # The loaders stream the plan of this manifest or refuse
            # (FAILED_PRECONDITION), never another manifest's batches, and
            # with the window the coordinator planned with, whatever the
            # loaders' own default.
            job.fingerprint = plan.fingerprint
            if plan.window:
                job.window = plan.window
            if plan.steps == 0 and job.resume_token and worker == 0:
                log.warning(
                    "shardstream: epoch %d has no steps left after the resume token; "
                    "call set_epoch() for the next epoch",
                    job.epoch,
                )
            # DataLoader worker w of N reads the steps w, w+N, ...; the
            # DataLoader takes one item from each worker in turn, so the
            # training loop sees the steps in order, as with no workers.
            # With K stripe loaders in the plan, the worker's stream j of K
            # reads w + j*N, every K*N-th step, and they are merged back.
            # live_batches also follows the rank's assignment and reports
            # its progress, each from a thread that ends with the stream.
            stream = live_batches(
                client,
                plan,
                job,
                rank,
                self.stats,
                first=first,
                stride=workers,
                columnar=self.columnar,
                max_loaders_per_rank=self.max_loaders_per_rank,
                job_name=self.job_name or self.dataset,
                worker=worker,
            )
            ready = self._ready(stream, in_worker)
            items: Prefetcher[_Ready] | Generator[_Ready, None, None] = (
                Prefetcher(ready, self.prefetch, cancel=client.cancel) if self.prefetch else ready
            )
            with closing(items):
                for step, token, item in items:
                    # The data wait: from the loop's next() to the item.
                    # ShardStreamLoader measures it in the main process.
                    self.stats.handed_step = step
                    if not with_token:
                        self.stats.record_wait(time.monotonic() - asked)
                    # The token changes only as a batch is handed over, so
                    # state_dict() never counts a batch the trainer has not
                    # had (not one prefetched, and a decode error leaves it
                    # at the previous batch). One of several DataLoader
                    # workers sees only its own steps, not where the rank
                    # stands: its copy keeps the token it started from, and
                    # its own position for StatefulDataLoader (the step
                    # counts from the stream's token, `offset` steps into
                    # the iteration).
                    if pos is not None:
                        pos = pos.after(offset + step + 1, token)
                        self._worker_pos = pos
                    elif workers == 1:
                        self._token = token
                    yield (token, item) if with_token else item
                    asked = time.monotonic()
        if not in_worker:
            self._epoch_done = True

    def _start_position(
        self, rank: int, world_size: int, worker: int, workers: int, in_worker: bool
    ) -> WorkerPosition | None:
        """The position a DataLoader worker's iteration starts from (a
        loaded one, or the start at the dataset's token); None in the main
        process. A loaded position must be this worker's."""
        loaded = self._worker_pos
        here = (worker, workers, world_size)
        if loaded is not None and (loaded.worker, loaded.workers, loaded.world_size) != here:
            raise ValueError(
                f"rank {rank}: the state of DataLoader worker {loaded.worker} of "
                f"{loaded.workers} at world size {loaded.world_size} cannot resume worker "
                f"{worker} of {workers} at world size {world_size}; load the whole "
                "StatefulDataLoader state into the dataset instead "
                "(ds.load_state_dict(loader_state) before building the loader): that "
                "resumes with any num_workers and world size"
            )
        return self._position() if in_worker else None

    def _ready(
        self, stream: Generator[Batch | ColumnarBatch, None, None], in_worker: bool
    ) -> Generator[_Ready, None, None]:
        """(step, token, item) for each received batch: decoded, transformed
        and collated. Runs in the prefetch thread when there is one."""
        with closing(stream) as batches:
            for batch in batches:
                if in_worker and isinstance(batch, ColumnarBatch):
                    batch = batch.share_memory_()  # one segment to the main process
                yield batch.step, batch.resume_token, self._process(batch)
