"""The client against the real server: exactly once, balance, determinism,
resume from a checkpoint, elastic resume, a server restart mid-epoch and
errors, with datasets made by ``shardstream pack``."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch.distributed as dist
from torch.utils.data import DataLoader

import shardstream
import shardstream._client
from tests.conftest import SAMPLES, Packed, pack, pack_local, sample_files, write_files
from tests.servertest import Server, free_port, write_reference_dataset

Ids = list[tuple[int, int]]


def check_sample(s: shardstream.Sample, size: int = 200, spread: int = 300) -> int:
    """Checks that a sample's fields belong to its key; returns its number."""
    i = int(s["cls"])
    assert s["__key__"].endswith(f"{i:06d}"), f"sample {s['__key__']} holds cls {i}"
    assert s["bin"] == sample_files(i, size + i % spread)["bin"], f"sample {i}: wrong bin"
    return i


def read_rank(
    address: str, rank: int, world_size: int, **kw: Any
) -> tuple[list[shardstream.Batch], shardstream.ShardStreamDataset]:
    kw.setdefault("batch_size", 16)
    ds = shardstream.ShardStreamDataset(address, rank=rank, world_size=world_size, **kw)
    return list(ds), ds


def numbers(batches: list[shardstream.Batch]) -> list[int]:
    return [check_sample(s) for b in batches for s in b]


def read_epoch(
    address: str, world_size: int, **kw: Any
) -> tuple[list[list[int]], shardstream.Plan]:
    """Every rank's sample numbers in order, and rank 0's plan."""
    out = []
    plan = None
    for r in range(world_size):
        batches, ds = read_rank(address, r, world_size, **kw)
        assert ds.last_plan is not None
        assert len(batches) == ds.last_plan.steps, (
            f"rank {r}: {len(batches)} batches, plan says {ds.last_plan.steps}"
        )
        assert [b.step for b in batches] == list(range(len(batches)))
        out.append(numbers(batches))
        plan = plan or ds.last_plan
    assert plan is not None
    return out, plan


def assert_exactly_once(delivered: list[int], dropped: int, total: int = SAMPLES) -> None:
    counts = Counter(delivered)
    repeated = {i: c for i, c in counts.items() if c > 1}
    assert not repeated, f"samples delivered more than once: {sorted(repeated.items())[:10]}"
    assert all(0 <= i < total for i in counts), "a sample outside the dataset"
    assert len(counts) + dropped == total, (
        f"{len(counts)} delivered + {dropped} dropped != {total} samples"
    )


@pytest.mark.parametrize(("world_size", "batch_size"), [(1, 64), (2, 16), (3, 7)])
def test_every_sample_once_drop(server: Server, world_size: int, batch_size: int) -> None:
    per_rank, plan = read_epoch(server.address, world_size, batch_size=batch_size, seed=1)
    # Balanced: every rank the same number of full batches.
    steps = {len(r) // batch_size for r in per_rank}
    assert len(steps) == 1, f"ranks got {[len(r) for r in per_rank]} samples"
    assert all(len(r) % batch_size == 0 for r in per_rank)
    assert plan.dropped == SAMPLES % (world_size * batch_size)
    assert plan.padded == 0
    assert_exactly_once([i for r in per_rank for i in r], plan.dropped)


def test_every_sample_at_least_once_pad(server: Server) -> None:
    world_size, batch_size = 3, 7
    per_rank, plan = read_epoch(
        server.address, world_size, batch_size=batch_size, seed=1, last_batch="pad"
    )
    assert len({len(r) for r in per_rank}) == 1, "unbalanced ranks"
    counts = Counter(i for r in per_rank for i in r)
    assert set(counts) == set(range(SAMPLES)), "a sample is missing under pad"
    assert plan.dropped == 0
    assert sum(c - 1 for c in counts.values()) == plan.padded > 0
    assert sum(counts.values()) == SAMPLES + plan.padded


def test_deterministic(server: Server) -> None:
    a, _ = read_epoch(server.address, 2, seed=5, epoch=1)
    b, _ = read_epoch(server.address, 2, seed=5, epoch=1)
    assert a == b, "the same job read twice gave different batches"
    c, _ = read_epoch(server.address, 2, seed=6, epoch=1)
    assert c != a, "another seed gave the same order"
    d, _ = read_epoch(server.address, 2, seed=5, epoch=2)
    assert d != a, "another epoch gave the same order"


def test_describe(server: Server, dataset: Packed) -> None:
    info = shardstream.ShardStreamDataset(server.address, batch_size=1).describe()
    assert (info.samples, info.shards) == (dataset.samples, dataset.shards)
    assert info.fingerprint


def take(it: Iterator[Any], n: int) -> list[Any]:
    return [next(it) for _ in range(n)]


def test_resume_from_state_dict(server: Server) -> None:
    world_size = 2
    kw: dict[str, Any] = {"seed": 3, "epoch": 4, "batch_size": 16}
    whole, _ = read_epoch(server.address, world_size, **kw)
    states = []
    firsts = []
    for r in range(world_size):
        ds = shardstream.ShardStreamDataset(server.address, rank=r, world_size=world_size, **kw)
        # Through a real DataLoader: num_workers=0 hands over one batch per
        # next(), so the state is that of the batches taken.
        it = iter(DataLoader(ds, batch_size=None))
        taken = take(it, 7)
        # Batch and its step and token survive the DataLoader's conversion.
        assert [b.step for b in taken] == list(range(7))
        assert taken[-1].resume_token == ds.state_dict()["resume_token"]
        firsts.append(numbers(taken))
        states.append(ds.state_dict())
        del it
    assert states[0] == states[1], "ranks at the same step hold different tokens"
    assert states[0]["epoch"] == 4
    assert states[0]["resume_token"]
    for r in range(world_size):
        ds = shardstream.ShardStreamDataset(
            server.address, rank=r, world_size=world_size, batch_size=16, seed=3
        )
        ds.load_state_dict(states[0])
        ds.set_epoch(4)  # the checkpoint's epoch: keeps its token
        rest = numbers(list(ds))
        assert firsts[r] + rest == whole[r], f"rank {r}: resumed run differs from the whole one"
        # At the end of the epoch nothing is left to read.
        assert list(ds) == []


@pytest.mark.parametrize(
    ("before", "after"),
    [((2, 16), (3, 5)), ((3, 7), (1, 32)), ((2, 8), (4, 8))],
    ids=["grow", "shrink", "double"],
)
def test_elastic_resume(server: Server, before: tuple[int, int], after: tuple[int, int]) -> None:
    (world, batch), (new_world, new_batch) = before, after
    first: list[int] = []
    tokens = set()
    for r in range(world):
        ds = shardstream.ShardStreamDataset(
            server.address, rank=r, world_size=world, seed=9, batch_size=batch
        )
        first += numbers(take(iter(ds), 10))
        tokens.add(ds.state_dict()["resume_token"])
    assert len(tokens) == 1, "ranks at the same step hold different tokens"
    (token,) = tokens
    # Another world and batch size take over from the checkpoint.
    rest, plan = read_epoch(
        server.address, new_world, seed=9, batch_size=new_batch, resume_token=token
    )
    assert len({len(r) for r in rest}) == 1, "unbalanced after the resize"
    assert_exactly_once(first + [i for r in rest for i in r], plan.dropped)


def decode_numbers(batch: shardstream.Batch) -> tuple[int, list[int]]:
    return batch.step, [check_sample(s) for s in batch]


def test_dataloader_worker_process(server: Server) -> None:
    want, _ = read_epoch(server.address, 2, seed=2)
    ds = shardstream.ShardStreamDataset(
        server.address, rank=1, world_size=2, seed=2, batch_size=16, decode=decode_numbers
    )
    # spawn: a DataLoader worker started clean, with its own gRPC channel.
    loader = DataLoader(ds, batch_size=None, num_workers=1, multiprocessing_context="spawn")
    got = list(loader)
    assert [s for s, _ in got] == list(range(len(got)))
    assert [i for _, b in got for i in b] == want[1]


@pytest.fixture(scope="module")
def other_server(
    shardstream_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A second, different dataset (fewer samples)."""
    d = pack_local(shardstream_bin, tmp_path_factory.mktemp("other"), 101, shard_size="8KiB")
    with Server(shardstream_bin, d.path, log=tmp_path_factory.mktemp("log") / "other.log") as s:
        yield s


@pytest.mark.parametrize(
    ("kwargs", "code", "match"),
    [
        ({"batch_size": 0}, grpc.StatusCode.INVALID_ARGUMENT, "batch_size"),
        ({"resume_token": "not-a-token"}, grpc.StatusCode.INVALID_ARGUMENT, "resume_token"),
        ({"dataset": "nope"}, grpc.StatusCode.NOT_FOUND, "nope"),
    ],
)
def test_bad_request(
    server: Server, kwargs: dict[str, Any], code: grpc.StatusCode, match: str
) -> None:
    kwargs.setdefault("batch_size", 4)
    ds = shardstream.ShardStreamDataset(server.address, rank=0, world_size=1, **kwargs)
    with pytest.raises(shardstream.ShardStreamError, match=match) as info:
        next(iter(ds))
    assert info.value.code == code, str(info.value)
    assert info.value.method == "PlanEpoch"
    assert server.address in str(info.value)
    assert code.name in str(info.value)


def test_token_from_another_dataset(server: Server, other_server: Server) -> None:
    ds = shardstream.ShardStreamDataset(other_server.address, rank=0, world_size=1, batch_size=4)
    next(iter(ds))
    token = ds.state_dict()["resume_token"]
    assert token
    bad = shardstream.ShardStreamDataset(
        server.address, rank=0, world_size=1, batch_size=4, resume_token=token
    )
    with pytest.raises(shardstream.ShardStreamError, match="fingerprint") as info:
        next(iter(bad))
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_token_from_another_seed(server: Server) -> None:
    ds = shardstream.ShardStreamDataset(server.address, rank=0, world_size=1, batch_size=4, seed=1)
    next(iter(ds))
    bad = shardstream.ShardStreamDataset(
        server.address,
        rank=0,
        world_size=1,
        batch_size=4,
        seed=2,
        **{"resume_token": ds.state_dict()["resume_token"]},
    )
    with pytest.raises(shardstream.ShardStreamError, match="seed") as info:
        next(iter(bad))
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_reference_dataset(shardstream_bin: Path, tmp_path: Path) -> None:
    # A dataset written without shardstream pack (plain tar shards from a
    # small reference writer) reads exactly once too.
    write_files(tmp_path / "files", 150)
    write_reference_dataset(tmp_path / "files", tmp_path / "ds", per_shard=16, per_chunk=5)
    with Server(shardstream_bin, str(tmp_path / "ds"), log=tmp_path / "serve.log") as s:
        per_rank, plan = read_epoch(s.address, 2, batch_size=8)
    assert_exactly_once([i for r in per_rank for i in r], plan.dropped, total=150)


# Big samples, so a rank's stream is far larger than what gRPC buffers ahead
# of the consumer: the restart surely cuts a stream.
BIG = 64 << 10


def test_server_restart_mid_epoch(shardstream_bin: Path, tmp_path: Path) -> None:
    total = 400
    write_files(tmp_path / "files", total, size=BIG, spread=1)
    pack(shardstream_bin, tmp_path / "files", str(tmp_path / "ds"), shard_size="4MiB")
    srv = Server(
        shardstream_bin,
        str(tmp_path / "ds"),
        log=tmp_path / "serve.log",
        extra=("--shutdown-timeout", "1s"),
    )
    srv.start()
    try:
        delivered: list[int] = []
        dropped = -1
        for rank, how in [(0, srv.kill), (1, srv.stop)]:
            ds = shardstream.ShardStreamDataset(
                srv.address, rank=rank, world_size=2, batch_size=4, retry_timeout=30
            )
            it = iter(ds)
            got = take(it, 5)
            how()  # SIGKILL for rank 0, SIGTERM (graceful, streams cut after 1s) for rank 1
            restart = threading.Thread(target=srv.start)
            restart.start()
            got += list(it)  # the client reconnects on its own
            restart.join()
            assert srv.proc is not None, "the server did not come back"
            assert ds.stats.reconnects >= 1, "the restart did not cut the stream: test is void"
            assert ds.last_plan is not None
            assert [b.step for b in got] == list(range(ds.last_plan.steps))
            delivered += [check_sample(s, BIG, 1) for b in got for s in b]
            dropped = ds.last_plan.dropped
        assert_exactly_once(delivered, dropped, total=total)
    finally:
        srv.stop()


def test_loader_killed_rank_moves_to_another(shardstream_bin: Path, tmp_path: Path) -> None:
    # Two servers over one dataset: B only streams, A plans and hands rank 0
    # to B, rank 1 to itself. B dies for good mid-stream; rank 0 finishes on
    # A, the other loader of the plan.
    total = 300
    write_files(tmp_path / "files", total, size=BIG, spread=1)
    pack(shardstream_bin, tmp_path / "files", str(tmp_path / "ds"), shard_size="4MiB")
    data = str(tmp_path / "ds")
    b = Server(shardstream_bin, data, log=tmp_path / "b.log")
    b.start()
    a = Server(shardstream_bin, data, log=tmp_path / "a.log")
    a.port = free_port()
    a.extra = ("--loader-addrs", f"{b.address},127.0.0.1:{a.port}")
    try:
        a.start()
        ds0 = shardstream.ShardStreamDataset(a.address, rank=0, world_size=2, batch_size=4)
        it = iter(ds0)
        got = take(it, 3)
        assert ds0.last_plan is not None
        assert ds0.last_plan.loader_addresses[0] == b.address
        b.kill()
        got += list(it)
        assert ds0.stats.reconnects >= 1, "killing the loader did not cut the stream: test is void"
        assert [x.step for x in got] == list(range(ds0.last_plan.steps))
        rest, _ = read_rank(a.address, 1, 2, batch_size=4)
        delivered = [check_sample(s, BIG, 1) for x in got + rest for s in x]
        assert_exactly_once(delivered, ds0.last_plan.dropped, total=total)
    finally:
        a.stop()
        b.stop()


def test_rank_from_torch_distributed_reaches_the_worker(server: Server) -> None:
    # Rank 1 of 2 from torch.distributed (a fake group: one process), not
    # from arguments. A spawned DataLoader worker has no process group of
    # its own; it must still read rank 1's batches, not rank 0 of 1's.
    from torch.testing._internal.distributed.fake_pg import FakeStore

    want, _ = read_epoch(server.address, 2, seed=8)
    dist.init_process_group("fake", rank=1, world_size=2, store=FakeStore())
    try:
        ds = shardstream.ShardStreamDataset(
            server.address, seed=8, batch_size=16, decode=decode_numbers
        )
        in_process = [i for _, b in ds for i in b]
        ds = shardstream.ShardStreamDataset(
            server.address, seed=8, batch_size=16, decode=decode_numbers
        )
        loader = DataLoader(ds, batch_size=None, num_workers=1, multiprocessing_context="spawn")
        in_worker = [i for _, b in loader for i in b]
    finally:
        dist.destroy_process_group()
    assert in_process == want[1]
    assert in_worker == want[1]


def test_job_carries_fingerprint(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The JobSpec of StreamBatches (and of each replan) names the
    manifest PlanEpoch planned; a loader serving another refuses it."""
    seen: list[str] = []
    real = shardstream._client.Client.batches

    def spy(self: Any, plan: Any, job: Any, *a: Any, **kw: Any) -> Any:
        seen.append(job.fingerprint)
        return real(self, plan, job, *a, **kw)

    monkeypatch.setattr(shardstream._client.Client, "batches", spy)
    ds = shardstream.ShardStreamDataset(server.address, rank=0, world_size=1, batch_size=64)
    assert sum(len(b) for b in ds) > 0
    assert ds.last_plan is not None
    assert seen == [ds.last_plan.fingerprint]

    job = ds.job(1)
    job.fingerprint = "0123456789abcdef"
    with (
        shardstream._client.Client(
            server.address, timeout=10, retry_timeout=0, max_message_bytes=1 << 20
        ) as c,
        pytest.raises(shardstream.ShardStreamError) as info,
    ):
        list(c.batches(ds.last_plan, job, 0, shardstream.Stats()))
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION, info.value
    assert "job.fingerprint" in info.value.details
