"""Prefetch, data-wait stats, auto_epoch and the silent-stream deadline,
against the real server (and a real TCP proxy in front of it)."""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import shardstream
from tests.conftest import pack, write_files
from tests.servertest import Proxy, Server, free_port
from tests.test_server import BIG, check_sample, take

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")

KW: dict[str, Any] = {"seed": 21, "batch_size": 16, "rank": 0, "world_size": 1}


def ids(batch: shardstream.Batch) -> list[tuple[int, int]]:
    return [(s["__shard__"], s["__index__"]) for s in batch]


def poll(cond: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(0.01)  # polling a condition, not synchronising


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "shardstream-prefetch"]


# ---- prefetch --------------------------------------------------------------


@pytest.mark.parametrize("prefetch", [0, 1, 3])
def test_prefetch_same_batches(server: Server, prefetch: int) -> None:
    want = list(shardstream.ShardStreamDataset(server.address, prefetch=0, **KW))
    ds = shardstream.ShardStreamDataset(server.address, prefetch=prefetch, **KW)
    got = list(ds)
    assert [(b.step, b.resume_token, ids(b)) for b in got] == [
        (b.step, b.resume_token, ids(b)) for b in want
    ]
    assert ds.state_dict()["resume_token"] == want[-1].resume_token
    assert not prefetch_threads(), "a prefetch thread outlived its iteration"


@pytest.mark.parametrize("prefetch", [0, 3])
def test_prefetch_is_bounded(server: Server, prefetch: int) -> None:
    # stats.batches counts batches taken off the stream (in the prefetch
    # thread when there is one); the loop has taken `taken`. The thread
    # runs exactly `prefetch` ahead of a slow loop, never more.
    ds = shardstream.ShardStreamDataset(server.address, prefetch=prefetch, **KW)
    it = iter(ds)
    taken = 0
    for _ in range(4):
        next(it)
        taken += 1
        assert ds.stats.batches - taken <= prefetch
        if prefetch:
            want = taken + prefetch
            poll(lambda w=want: ds.stats.batches == w, "the thread fills its buffer")
        # A slow training step: the thread must stay within its bound.
        stop = time.monotonic() + 0.3
        while time.monotonic() < stop:
            assert ds.stats.batches - taken <= prefetch, "prefetched past the bound"
            time.sleep(0.01)
    rest = list(it)
    assert ds.last_plan is not None
    assert taken + len(rest) == ds.last_plan.steps


def test_prefetch_token_is_last_handed_over(server: Server) -> None:
    whole = list(shardstream.ShardStreamDataset(server.address, prefetch=0, **KW))
    ds = shardstream.ShardStreamDataset(server.address, prefetch=6, **KW)
    it = iter(ds)
    first = take(it, 5)
    poll(lambda: ds.stats.batches >= 11, "the thread runs ahead")
    state = ds.state_dict()
    assert state["resume_token"] == first[-1].resume_token == whole[4].resume_token
    del it
    again = shardstream.ShardStreamDataset(server.address, prefetch=6, **KW)
    again.load_state_dict(state)
    rest = list(again)
    assert [ids(b) for b in first + rest] == [ids(b) for b in whole], "lost or repeated"


FAIL_AT = 3


def fail_at_step(batch: shardstream.Batch) -> tuple[int, str]:
    if batch.step == FAIL_AT:
        raise ValueError(f"bad batch at step {batch.step}")
    return batch.step, batch.resume_token


def test_prefetch_error_surfaces_at_its_batch(server: Server) -> None:
    ds = shardstream.ShardStreamDataset(server.address, prefetch=8, decode=fail_at_step, **KW)
    it = iter(ds)
    got = [next(it)]  # the first next() starts the stream and the thread
    # The thread fails on step 3 long before the loop gets there.
    poll(lambda: ds.stats.batches > FAIL_AT, "the thread reaches the bad batch")
    got += [next(it) for _ in range(FAIL_AT - 1)]
    assert [s for s, _ in got] == list(range(FAIL_AT))
    with pytest.raises(ValueError, match="bad batch at step 3"):
        next(it)
    assert ds.state_dict()["resume_token"] == got[-1][1], "the token moved past the error"
    with pytest.raises(StopIteration):
        next(it)
    poll(lambda: not prefetch_threads(), "the thread ends after the error")


DECODE_SECONDS = 0.2


def slow_decode(batch: shardstream.Batch) -> int:
    time.sleep(DECODE_SECONDS)  # the decoding work, not synchronisation
    return batch.step


@pytest.mark.parametrize("prefetch", [0, 2])
def test_prefetch_overlaps_decode_with_the_step(server: Server, prefetch: int) -> None:
    # Decoding takes 0.2 s a batch, the training step 0.4 s. Without
    # prefetch the loop waits out every decode; with it the decode of the
    # next batch runs during the step, and the loop barely waits.
    ds = shardstream.ShardStreamDataset(server.address, prefetch=prefetch, decode=slow_decode, **KW)
    it = iter(ds)
    for step in range(6):
        assert next(it) == step
        time.sleep(0.4)  # the training step
    waits = sorted(list(ds.stats.recent_waits)[1:])  # the first also planned
    median = waits[len(waits) // 2]
    if prefetch:
        assert median < 0.1, f"waits {waits}: the decode did not overlap the step"
    else:
        assert waits[0] >= DECODE_SECONDS, f"waits {waits}: shorter than the decode"


def test_prefetch_thread_stops_when_iterator_dropped(server: Server) -> None:
    ds = shardstream.ShardStreamDataset(server.address, prefetch=2, **KW)
    it = iter(ds)
    next(it)
    assert len(prefetch_threads()) == 1
    del it
    gc.collect()
    poll(lambda: not prefetch_threads(), "the prefetch thread stops")


# ---- data wait -------------------------------------------------------------


def test_data_wait_recorded(server: Server) -> None:
    seen: list[float] = []
    ds = shardstream.ShardStreamDataset(server.address, prefetch=0, **KW)
    ds.stats = shardstream.Stats(wait_history=4)
    ds.stats.on_wait = seen.append
    it = iter(ds)
    outside: list[float] = []
    while True:
        start = time.monotonic()
        try:
            next(it)
        except StopIteration:
            break
        outside.append(time.monotonic() - start)
        # The wait is the time this next() took, measured inside it.
        assert 0 <= ds.stats.last_wait <= outside[-1]
    n = len(outside)
    assert ds.stats.waits == n == len(seen) == ds.stats.batches
    assert ds.stats.wait_seconds == pytest.approx(sum(seen))
    assert list(ds.stats.recent_waits) == seen[-4:], "the history is the last 4 waits"
    assert sum(seen) <= sum(outside)


def test_stats_checks_history() -> None:
    with pytest.raises(ValueError, match="wait_history"):
        shardstream.Stats(wait_history=-1)
    with pytest.raises(TypeError, match="wait_history"):
        shardstream.Stats(wait_history=1.5)  # type: ignore[arg-type]


# ---- auto_epoch ------------------------------------------------------------


def epoch_ids(server: Server, epoch: int) -> list[list[tuple[int, int]]]:
    ds = shardstream.ShardStreamDataset(server.address, epoch=epoch, prefetch=0, **KW)
    return [ids(b) for b in ds]


def test_auto_epoch(server: Server) -> None:
    ds = shardstream.ShardStreamDataset(server.address, auto_epoch=True, **KW)
    assert [ids(b) for b in ds] == epoch_ids(server, 0)
    assert ds.epoch == 0, "the epoch moves when the next iteration starts, not before"
    assert [ids(b) for b in ds] == epoch_ids(server, 1)
    assert ds.epoch == 1
    # A checkpoint taken after an epoch's last batch resumes at the next.
    resumed = shardstream.ShardStreamDataset(server.address, auto_epoch=True, **KW)
    resumed.load_state_dict(ds.state_dict())
    assert [ids(b) for b in resumed] == epoch_ids(server, 2)
    # Stopped early: the next iteration resumes epoch 2, it does not skip.
    it = iter(ds)
    first = take(it, 4)
    del it
    assert ds.epoch == 2
    rest = list(ds)
    assert [ids(b) for b in first + rest] == epoch_ids(server, 2)
    # An explicit set_epoch wins over the automatic one.
    ds.set_epoch(7)
    assert [ids(b) for b in ds] == epoch_ids(server, 7)
    # Off by default: a second iteration continues the finished epoch.
    off = shardstream.ShardStreamDataset(server.address, **KW)
    assert len(list(off)) > 0
    assert list(off) == []


def test_auto_epoch_and_wait_with_workers(server: Server) -> None:
    # With DataLoader workers the main process decides the epoch before
    # each iteration starts its workers, so every worker reads the same
    # one; the data wait is measured in the main process.
    calls: list[float] = []
    ds = shardstream.ShardStreamDataset(server.address, auto_epoch=True, **KW)
    ds.stats.on_wait = lambda s: calls.append(s)  # not picklable: stays here
    loader = shardstream.ShardStreamLoader(ds, num_workers=2)
    for epoch in (0, 1):
        got = list(loader)
        assert [ids(b) for b in got] == epoch_ids(server, epoch)
        assert ds.state_dict() == {"resume_token": got[-1].resume_token, "epoch": epoch}
    n = len(epoch_ids(server, 0)) + len(epoch_ids(server, 1))
    assert ds.stats.waits == len(calls) == n


# ---- stream_deadline -------------------------------------------------------


@pytest.fixture(scope="module")
def big_data(shardstream_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """400 samples of 64 KiB: a stream far larger than what gRPC and the
    sockets buffer, so pausing the proxy surely starves it."""
    root = tmp_path_factory.mktemp("big")
    write_files(root / "files", 400, size=BIG, spread=1)
    pack(shardstream_bin, root / "files", str(root / "ds"), shard_size="4MiB")
    return str(root / "ds")


def test_silent_stream_reopened(shardstream_bin: Path, big_data: str, tmp_path: Path) -> None:
    # One server; the plan sends rank 0 to it through a proxy. The proxy
    # stops forwarding mid-stream: the connection stays up and says
    # nothing. After stream_deadline the stream is cancelled and reopened
    # from its next step on the plan's other address (the server itself).
    port = free_port()
    with Proxy(f"127.0.0.1:{port}") as proxy:
        srv = Server(shardstream_bin, big_data, log=tmp_path / "serve.log")
        srv.port = port
        srv.extra = ("--loader-addrs", f"{proxy.address},127.0.0.1:{port}")
        with srv:
            # Two ranks, so the plan names both addresses (rank 1's is the
            # server's): the one a reopened stream of rank 0 moves to.
            ds = shardstream.ShardStreamDataset(
                srv.address,
                rank=0,
                world_size=2,
                batch_size=4,
                stream_deadline=2.0,
                retry_timeout=30,
            )
            it = iter(ds)
            got = take(it, 3)
            assert ds.last_plan is not None
            assert ds.last_plan.loader_addresses[0] == proxy.address
            proxy.pause()
            start = time.monotonic()
            got += list(it)
            took = time.monotonic() - start
    assert ds.stats.reconnects >= 1, "the paused proxy did not starve the stream: test is void"
    assert "stream_deadline" in ds.stats.last_error
    assert took < 30, f"the silent stream took {took:.1f}s to be replaced"
    assert [b.step for b in got] == list(range(ds.last_plan.steps))
    nums = [check_sample(s, BIG, 1) for b in got for s in b]
    assert len(nums) == len(set(nums)) == len(got) * 4


@pytest.mark.parametrize("prefetch", [0, 2])
def test_slow_training_step_never_trips_deadline(server: Server, prefetch: int) -> None:
    # The clock runs only while the client waits for a message: a training
    # step longer than the deadline is not a silent stream.
    ds = shardstream.ShardStreamDataset(
        server.address, stream_deadline=1.0, prefetch=prefetch, **KW
    )
    it = iter(ds)
    for _ in range(3):
        next(it)
        stop = time.monotonic() + 2.0  # the training step, 2 deadlines long
        while time.monotonic() < stop:
            time.sleep(0.05)
    rest = list(it)
    assert ds.stats.reconnects == 0, ds.stats.last_error
    assert ds.last_plan is not None
    assert 3 + len(rest) == ds.last_plan.steps


def test_slow_stream_never_trips_deadline(server: Server) -> None:
    # Every byte through a proxy at 30 kB/s: a batch (~6 kB) every ~0.2 s,
    # the whole read several deadlines long. Alive, so never cancelled.
    with Proxy(server.address) as proxy:
        proxy.rate = 30_000
        ds = shardstream.ShardStreamDataset(
            proxy.address, stream_deadline=1.5, prefetch=0, timeout=30, **KW
        )
        start = time.monotonic()
        got = take(iter(ds), 20)
        took = time.monotonic() - start
    assert took > 2 * 1.5, f"read in {took:.1f}s: not slow enough to test the deadline"
    assert ds.stats.reconnects == 0, ds.stats.last_error
    # The loop did nothing but wait for data: the data wait says so.
    assert ds.stats.wait_seconds > 0.8 * took
    assert [b.step for b in got] == list(range(20))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"prefetch": -1}, ValueError, "prefetch"),
        ({"prefetch": 1.5}, TypeError, "prefetch"),
        ({"stream_deadline": 0}, ValueError, "stream_deadline"),
        ({"stream_deadline": "60"}, TypeError, "stream_deadline"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        shardstream.ShardStreamDataset("127.0.0.1:1", batch_size=1, **kwargs)
