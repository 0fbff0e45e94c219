"""Live rebalancing (WatchAssignment) and progress reports, against a real
``shardstream coordinator`` and real ``shardstream loader`` processes: a rank
streaming an epoch gains a stripe on a loader that joins, leaves a loader
that drains (which then exits long before its --drain-timeout), rides out a
coordinator SIGKILL and restart, and sees every sample once in the order of
an undisturbed run; its progress shows in ``shardstream status``."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import shardstream
from tests.conftest import pack_local
from tests.test_stripes import KW, Cluster, ids, summary

WAIT = 30.0  # seconds any one condition below may take to come true
DRAIN_TIMEOUT = 60.0  # the loaders' --drain-timeout


def wait_for(what: str, ok: Callable[[], bool]) -> None:
    """Polls ``ok`` until it holds, failing after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"never {what} in {WAIT}s")
        time.sleep(0.05)  # polling the coordinator, not synchronising


def status(bin_path: Path, address: str) -> dict[str, Any]:
    out = subprocess.run(
        [str(bin_path), "status", "--coordinator", address, "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    st: dict[str, Any] = json.loads(out)
    return st


def client_threads() -> list[str]:
    return [
        t.name for t in threading.enumerate() if t.name.startswith("shardstream-") and t.is_alive()
    ]


def test_rank_moves_on_join_drain_and_coordinator_restart(
    shardstream_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # 1 MiB batches (as test_loader_killed_mid_epoch): a stripe's stream
    # cannot have sent its whole stripe before the rank moves off it.
    root = tmp_path_factory.mktemp("rebalance")
    big = pack_local(shardstream_bin, root, 240, shard_size="4MiB", size=128 << 10, spread=7)
    c = Cluster(
        shardstream_bin,
        big.path,
        root,
        1,
        loader_extra=("--pre-stop", "200ms", "--drain-timeout", f"{DRAIN_TIMEOUT:g}s"),
    )
    try:
        kw = {**KW, "retry_timeout": 30.0}
        one = list(shardstream.ShardStreamDataset(c.address, rank=0, world_size=1, **kw))
        ds = shardstream.ShardStreamDataset(
            c.address, rank=0, world_size=1, max_loaders_per_rank=2, job_name="rebalance", **kw
        )

        # PlanEpoch names what the watch does for a watched rank (of the
        # same job: from the epoch's start, not ds's current token).
        job = shardstream.ShardStreamDataset(
            c.address, rank=0, world_size=1, max_loaders_per_rank=2, **kw
        )

        def stripes() -> tuple[str, ...]:
            return job.plan().rank_loaders[0]

        a = c.loaders[0]
        it = iter(ds)
        got = [next(it) for _ in range(3)]
        assert stripes() == (a.address,)

        # b joins: the rank asked for 2 stripes and gets its second one.
        b = c.add_loader()
        wait_for("gave the rank a stripe on b", lambda: stripes() == (a.address, b.address))
        got += [next(it) for _ in range(3)]

        # d joins: 1 stripe on a and b each, 0 on d is balanced, so
        # nothing moves.
        d = c.add_loader()
        c.wait_pool(3)
        got += [next(it) for _ in range(2)]
        assert stripes() == (a.address, b.address)

        # a drains: its stripe moves to d, b's stays; a's stream ends as
        # the rank moves, and a exits without waiting out --drain-timeout.
        assert a.proc is not None
        drained = a.proc
        sigterm = time.monotonic()
        drained.send_signal(signal.SIGTERM)
        wait_for("moved a's stripe to d", lambda: stripes() == (d.address, b.address))
        got += [next(it) for _ in range(3)]
        code = drained.wait(timeout=DRAIN_TIMEOUT)
        took = time.monotonic() - sigterm
        assert code == 0, a.log()
        assert took < DRAIN_TIMEOUT / 4, f"drained loader exited after {took:.1f}s"
        a.proc = None
        print(f"drained loader exited {took:.2f}s after SIGTERM (drain timeout {DRAIN_TIMEOUT:g}s)")

        # The rank's progress reached the coordinator (it took step 10; a
        # report goes about every second).
        def reported() -> bool:
            st = status(shardstream_bin, c.address)
            jobs = [j for j in st["jobs"] if j["name"] == "rebalance"]
            return bool(jobs) and jobs[0]["ranks"][0]["step"] == 10

        wait_for("showed the job's progress in status", reported)

        # The coordinator dies: the data streams go on without it, and the
        # watch finds it again once it is back.
        c.coordinator.kill()
        got += [next(it) for _ in range(3)]
        c.coordinator.start()
        # Its table comes back from the watch, which names the rank's
        # loaders: nothing moves once the loaders' beats are back.
        wait_for("kept the rank's loaders", lambda: stripes() == (d.address, b.address))
        got += list(it)

        assert summary(got) == summary(one)
        seen = [i for b in got for i in ids(b)]
        assert len(seen) == len(set(seen)) == big.samples
        assert ds.stats.reconnects == 0, ds.stats.last_error  # moves are not failures
        wait_for("stopped the watch and progress threads", lambda: not client_threads())
    finally:
        c.stop()


def test_threads_stop_with_the_iterator(shardstream_bin: Path, tmp_path: Path) -> None:
    big = pack_local(shardstream_bin, tmp_path, 64, shard_size="1MiB", size=4 << 10, spread=7)
    c = Cluster(shardstream_bin, big.path, tmp_path, 1)
    try:
        ds = shardstream.ShardStreamDataset(c.address, rank=0, world_size=1, **KW)
        it = iter(ds)
        next(it)
        assert any(n.startswith("shardstream-watch") for n in client_threads())
        assert any(n.startswith("shardstream-progress") for n in client_threads())
        del it  # a script that stops early: the generator is collected
        wait_for("stopped the client's threads", lambda: not client_threads())
    finally:
        c.stop()


def test_progress_reports_the_wait(shardstream_bin: Path, tmp_path: Path) -> None:
    # A training loop that computes 50 ms per step against a local loader
    # that keeps up: the coordinator sees it take its steps at about
    # batch_size / 50 ms and wait for data a small part of its time.
    big = pack_local(shardstream_bin, tmp_path, 400, shard_size="1MiB", size=4 << 10, spread=7)
    c = Cluster(shardstream_bin, big.path, tmp_path, 1)
    try:
        ds = shardstream.ShardStreamDataset(
            c.address, rank=0, world_size=1, job_name="steady", **KW
        )
        it = iter(ds)
        for step in range(30):
            b = next(it)
            assert b.step == step
            time.sleep(0.05)  # the training step's compute, not synchronisation
        st = status(shardstream_bin, c.address)
        jobs = [j for j in st["jobs"] if j["name"] == "steady"]
        assert jobs, st
        job = jobs[0]
        print(f"steady job: {job}")
        assert job["dataset"] == "default", job
        assert job["world_size"] == 1, job
        assert 10 <= job["ranks"][0]["step"] <= 29, job
        # 8 samples per step of 50 ms and a little: under 168/s over any
        # 1 s report, less on a loaded host (a double count would be 320).
        assert 20 < job["samples_per_second"] <= 200, job
        assert job["data_wait_ratio"] < 0.5, job
        assert st["loaders_desired"] >= 1
        del it
    finally:
        c.stop()
