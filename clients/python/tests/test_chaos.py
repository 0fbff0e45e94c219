"""The chaos epoch (issue #11): one whole epoch of 4 trainer ranks, each its
own process striping its steps over 2 loaders, while loaders are killed and
restarted, a loader joins, one drains and the coordinator is killed and
restarted, all at random moments. Afterwards every sample of the epoch
reached exactly one rank exactly once, every rank got the same number of
steps, in order; and the longest pause each kind of failure caused is
measured (see :func:`pauses` and docs/failure-model.md).

Everything is real: MinIO on loopback, ``shardstream coordinator`` and
``shardstream loader`` processes, the ranks' torch client
(tests/chaos_rank.py). The failures are driven by a seeded RNG
(``SHARDSTREAM_CHAOS_SEED`` picks another seed) and fire when every rank has
passed a step, read from the ranks' record files; nothing waits on a clock.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from shardstream.v1 import shardstream_pb2 as pb
from shardstream.v1 import shardstream_pb2_grpc as pb_grpc
from tests.conftest import Packed, pack_local
from tests.servertest import MinIO, Server

log = logging.getLogger("shardstream.chaos")

PYTHON_ROOT = Path(__file__).resolve().parents[1]

WORLD = 4
BATCH = 2
# 240 steps a rank of 2 samples of 64 KiB (random bytes: zstd leaves them
# that size), 3 samples dropped. Batches of 128 KiB: the client's receive
# buffers (HTTP/2 window and socket buffers, a few MiB a stream) hold a
# small part of a stripe's ~15 MiB, so a loader's death or drain cuts
# streams that still have most of their stripe to send. Few, large samples:
# writing thousands of small files is what costs time here.
SAMPLES = 240 * WORLD * BATCH + 3
SAMPLE_BYTES = 64 << 10
# The simulated training step: the epoch lasts ~40 s, long enough for the
# seven failures below and their recoveries (~30 s together on a loaded
# machine).
STEP_TIME = 0.15
POOL_TIMEOUT = "2s"
PRE_STOP = "1s"
DRAIN_TIMEOUT = "2s"
# Every rank takes this many steps after a failure's last action before the
# next failure may fire, so that each failure's pause is its own.
SETTLE_STEPS = 10
# Generous bounds for a loaded machine: a stuck epoch fails, not hangs.
WAIT = 120.0
EPOCH_TIMEOUT = 240.0


def seed() -> int:
    return int(os.environ.get("SHARDSTREAM_CHAOS_SEED", "11"))


class Pool:
    """The coordinator's live pool as ListLoaders shows it."""

    def __init__(self, address: str) -> None:
        # Reconnect fast to a restarted coordinator (the default first
        # backoff is 1 s).
        self.channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.initial_reconnect_backoff_ms", 50),
                ("grpc.min_reconnect_backoff_ms", 50),
                ("grpc.max_reconnect_backoff_ms", 500),
            ],
        )
        self.stub = pb_grpc.PoolServiceStub(self.channel)

    def loaders(self) -> dict[str, pb.PoolLoader] | None:
        """The pool by address, or None while the coordinator does not answer."""
        try:
            r = self.stub.ListLoaders(pb.ListLoadersRequest(), timeout=5)
        except grpc.RpcError:
            return None
        return {p.address: p for p in r.loaders}

    def close(self) -> None:
        self.channel.close()


@dataclass
class Records:
    """What one rank recorded: its batches and its done line."""

    rank: int
    records: list[dict[str, Any]] = field(default_factory=list)
    done: dict[str, Any] | None = None

    def normal_step(self) -> float:
        """The median time between two batches: the step time without
        failures."""
        ts = [float(rec["t"]) for rec in self.records]
        return statistics.median(b - a for a, b in itertools.pairwise(ts))

    @property
    def step(self) -> int:
        """The last step the training loop took, -1 before the first."""
        return int(self.records[-1]["step"]) if self.records else -1


@dataclass(kw_only=True)
class Rank(Records):
    """One trainer rank process and its record file."""

    out: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    _offset: int = 0

    def poll(self) -> None:
        """Reads the records written since the last poll (whole lines only)."""
        try:
            with self.out.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            rec = json.loads(line)
            if rec.get("done"):
                self.done = rec
            else:
                self.records.append(rec)


@dataclass
class Event:
    kind: str
    what: str
    t0: float  # when it began (the signal, or the start of the new process)
    t1: float = 0.0  # when its last action ended


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError as e:
        return f"(no log: {e})"


class Chaos:
    """The cluster, the ranks and the failure driver of one chaos epoch."""

    def __init__(self, bin_path: Path, data: str, minio: MinIO, logs: Path) -> None:
        self.bin_path = bin_path
        self.data = data
        self.env = minio.env()
        self.s3 = ("--s3-endpoint", minio.endpoint, "--s3-path-style")
        self.logs = logs
        self.coordinator = Server(
            bin_path,
            data,
            log=logs / "coordinator.log",
            role="coordinator",
            extra=(*self.s3, "--pool-timeout", POOL_TIMEOUT),
            env=self.env,
        )
        self.loaders: dict[str, Server] = {}
        self.gone: dict[str, Server] = {}  # drained loaders, for their logs
        self.ranks: list[Rank] = []
        self.events: list[Event] = []
        self.pool: Pool | None = None
        # Where the ranks, started early, find the coordinator.
        self.address = logs / "coordinator.address"
        self.killed = ""  # the last loader SIGKILLed, restarted next

    # ---- processes -----------------------------------------------------

    def start(self, loaders: int) -> None:
        """Starts the coordinator and ``loaders`` loaders, then lets the
        ranks go."""
        self.coordinator.start()
        self.pool = Pool(self.coordinator.address)
        for _ in range(loaders):
            self.add_loader()
        tmp = self.address.with_suffix(".tmp")
        tmp.write_text(self.coordinator.address)
        tmp.rename(self.address)

    def add_loader(self) -> str:
        name = f"loader{len(self.loaders) + len(self.gone)}"
        s = Server(
            self.bin_path,
            self.data,
            log=self.logs / f"{name}.log",
            role="loader",
            extra=(
                *self.s3,
                "--coordinator",
                self.coordinator.address,
                "--pre-stop",
                PRE_STOP,
                "--drain-timeout",
                DRAIN_TIMEOUT,
            ),
            env=self.env,
        )
        s.start()
        self.loaders[name] = s
        self.wait(lambda: self.in_pool(s.address), f"{name} ({s.address}) in the pool")
        return name

    def start_ranks(self, step_time: float) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(PYTHON_ROOT), *filter(None, [env.get("PYTHONPATH")])]
        )
        for r in range(WORLD):
            out, log_path = self.logs / f"rank{r}.jsonl", self.logs / f"rank{r}.log"
            cmd = [sys.executable, "-m", "tests.chaos_rank", "--address-file", str(self.address)]
            cmd += ["--rank", str(r), "--world-size", str(WORLD), "--batch-size", str(BATCH)]
            cmd += ["--seed", str(seed()), "--step-time", str(step_time), "--out", str(out)]
            with log_path.open("wb") as lf:
                proc = subprocess.Popen(
                    cmd, cwd=PYTHON_ROOT, env=env, stdout=lf, stderr=subprocess.STDOUT
                )
            self.ranks.append(Rank(r, out=out, log_path=log_path, proc=proc))

    def stop(self) -> None:
        """Ends every process still running (teardown, also after a failure)."""
        for r in self.ranks:
            if r.proc.poll() is None:
                r.proc.kill()
            r.proc.wait()
        if self.pool is not None:
            self.pool.close()
        for s in [*self.loaders.values(), *self.gone.values()]:
            s.kill()
        self.coordinator.kill()

    def report(self) -> str:
        """Every process's log tail, for a failure message."""
        parts = [f"events: {[(e.kind, e.what) for e in self.events]}"]
        for r in self.ranks:
            parts.append(f"--- rank {r.rank} (exit {r.proc.poll()}):\n{tail(r.log_path)}")
        parts.append(f"--- coordinator:\n{tail(self.coordinator.log_path)}")
        for name, s in {**self.loaders, **self.gone}.items():
            parts.append(f"--- {name} ({s.address}):\n{tail(s.log_path)}")
        return "\n".join(parts)

    # ---- observing -----------------------------------------------------

    def poll_ranks(self) -> None:
        for r in self.ranks:
            r.poll()
            code = r.proc.poll()
            if code is not None:
                r.poll()  # what it wrote before it exited
                if code != 0 or r.done is None:
                    raise AssertionError(
                        f"rank {r.rank} exited with {code} after step {r.step} "
                        f"(epoch done: {r.done is not None})\n{self.report()}"
                    )

    def min_step(self) -> int:
        self.poll_ranks()
        return min(r.step for r in self.ranks)

    def in_pool(self, *addresses: str, leaving: bool = False) -> bool:
        """Whether the pool lists every one of ``addresses``, serving (or
        with ``leaving``, draining)."""
        assert self.pool is not None
        pool = self.pool.loaders()
        return pool is not None and all(a in pool and pool[a].leaving == leaving for a in addresses)

    def busy(self) -> list[str]:
        """The serving loaders' names, those with open streams (as their
        last beat said) only, unless none has any."""
        assert self.pool is not None
        pool = self.pool.loaders() or {}
        names = sorted(self.loaders)
        busy = [
            n
            for n in names
            if self.loaders[n].address in pool
            and pool[self.loaders[n].address].load.streams_open > 0
        ]
        return busy or names

    def out_of_pool(self, address: str) -> bool:
        assert self.pool is not None
        loaders = self.pool.loaders()
        return loaders is not None and address not in loaders

    def wait(self, cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        """Polls ``cond`` until it holds; fails naming ``what`` after
        ``timeout`` seconds, or at once if a rank failed."""
        deadline = time.monotonic() + timeout
        while not cond():
            self.poll_ranks()
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout}s: {what}\n{self.report()}")
            time.sleep(0.05)  # polling files and the pool, not synchronising

    def wait_step(self, step: int, what: str) -> None:
        self.wait(lambda: self.min_step() >= step, f"every rank past step {step} ({what})")

    def epoch_left(self) -> None:
        """Fails if a rank already finished its epoch: a failure must hit a
        running epoch to be measured."""
        self.poll_ranks()
        finished = [r.rank for r in self.ranks if r.done is not None]
        assert not finished, f"ranks {finished} ended before the failures did: lengthen the epoch"

    # ---- failures ------------------------------------------------------

    def fire(self, kind: str, target: int, rng: random.Random) -> None:
        """Waits for every rank to pass step ``target``, causes one failure of
        ``kind`` and waits until the cluster is whole again and every rank
        took SETTLE_STEPS more steps."""
        self.wait_step(target, kind)
        self.epoch_left()
        busy = self.busy()  # a failure that hits streams
        t0 = time.monotonic()
        if kind == "loader SIGKILL":
            name = rng.choice(busy)
            s = self.loaders[name]
            s.kill()
            ev = Event(kind, f"{name} ({s.address})", t0)
            self.wait(lambda: self.out_of_pool(s.address), f"{name} dropped from the pool")
            self.killed = name
        elif kind == "loader restart":
            name = self.killed
            s = self.loaders[name]
            s.start()  # on its old port
            ev = Event(kind, f"{name} ({s.address})", t0)
            self.wait(lambda: self.in_pool(s.address), f"{name} back in the pool")
        elif kind == "loader added":
            name = self.add_loader()
            ev = Event(kind, f"{name} ({self.loaders[name].address})", t0)
        elif kind == "loader SIGTERM (drain)":
            name = rng.choice(busy)
            s = self.loaders.pop(name)
            self.gone[name] = s
            s.terminate()
            ev = Event(kind, f"{name} ({s.address})", t0)
            self.wait(lambda: self.in_pool(s.address, leaving=True), f"{name} draining")
            code = s.wait(timeout=WAIT)
            assert code == 0, f"drained {name} exited with {code}\n{self.report()}"
        elif kind == "coordinator SIGKILL + restart":
            self.coordinator.kill()
            self.coordinator.start()  # on its old port
            ev = Event(kind, f"coordinator ({self.coordinator.address})", t0)
            serving = [s.address for s in self.loaders.values()]
            self.wait(lambda: self.in_pool(*serving), f"{serving} back in the new pool")
        else:
            raise ValueError(kind)
        ev.t1 = time.monotonic()
        self.events.append(ev)
        log.info("chaos: %s %s at step %d, %.2fs of actions", kind, ev.what, target, ev.t1 - t0)
        settled = self.min_step() + SETTLE_STEPS
        self.wait_step(settled, f"settling after {kind}")


KINDS = [
    "loader SIGKILL",
    "loader restart",
    "loader added",
    "loader SIGKILL",
    "loader restart",
    "loader SIGTERM (drain)",
    "coordinator SIGKILL + restart",
]


@dataclass(frozen=True)
class Pause:
    kind: str
    what: str
    seconds: float  # the longest gap minus the rank's normal step time
    rank: int
    step: int  # the step that ended the gap


def pauses(ranks: Sequence[Records], events: list[Event]) -> list[Pause]:
    """The longest pause each failure caused.

    A rank's gaps are the times between the arrivals of its consecutive
    batches; its normal step time is the median gap. A gap belongs to the
    last failure that began (its signal, or the new process's start) before
    the gap ended: the one in progress when the rank was kept waiting, even
    when the gap had begun a little before it. A failure's pause is the
    largest gap of any rank that belongs to it, minus that rank's normal
    step time (0 when none was longer than normal). A failure keeps its
    gaps until the next one begins (every rank took SETTLE_STEPS steps after
    its last action), so a stream's batches still in the client's receive
    buffer, consumed before the broken stream is noticed, do not hide its
    pause.
    """
    end = max(r.records[-1]["t"] for r in ranks)
    out = []
    for i, ev in enumerate(events):
        until = events[i + 1].t0 if i + 1 < len(events) else end
        best = Pause(ev.kind, ev.what, 0.0, -1, -1)
        for r in ranks:
            normal = r.normal_step()
            for a, b in itertools.pairwise(r.records):
                late = b["t"] - a["t"] - normal
                if ev.t0 < b["t"] <= until and late > best.seconds:
                    best = Pause(ev.kind, ev.what, late, r.rank, int(b["step"]))
        out.append(best)
    return out


def check_epoch(ranks: Sequence[Records], dataset: Packed, manifest: dict[str, Any]) -> None:
    """Exactly once, balanced, in order."""
    dones = [r.done for r in ranks]
    assert all(dones), f"ranks without a done record: {[r.rank for r in ranks if not r.done]}"
    steps = {r.rank: len(r.records) for r in ranks}
    plan_steps = {int(d["steps"]) for d in dones if d}
    assert len(plan_steps) == 1, f"ranks were planned different step counts: {plan_steps}"
    assert set(steps.values()) == plan_steps, f"steps taken per rank {steps}, planned {plan_steps}"
    for r in ranks:
        got = [int(rec["step"]) for rec in r.records]
        assert got == list(range(len(got))), f"rank {r.rank}: steps out of order: {got}"
    seen = Counter((int(s), int(i)) for r in ranks for rec in r.records for s, i in rec["ids"])
    every = {(s, i) for s, shard in enumerate(manifest["shards"]) for i in range(shard["samples"])}
    assert len(every) == dataset.samples
    repeated = sorted(k for k, n in seen.items() if n > 1)
    unknown = sorted(set(seen) - every)
    lost = sorted(every - set(seen))
    d = dones[0]
    assert d is not None
    assert not repeated, f"{len(repeated)} samples repeated (shard, index): {repeated[:20]}"
    assert not unknown, f"samples not in the dataset: {unknown[:20]}"
    assert len(lost) == int(d["dropped"]), (
        f"{len(lost)} samples never arrived, the plan dropped {d['dropped']} "
        f"(last_batch='drop'): {lost[:20]}"
    )
    assert sum(seen.values()) == int(d["samples"]), (
        f"{sum(seen.values())} samples arrived, the plan has {d['samples']}"
    )


@pytest.fixture
def chaos(shardstream_bin: Path, minio: MinIO, tmp_path: Path) -> Iterator[tuple[Chaos, Packed]]:
    logs = tmp_path / "logs"
    logs.mkdir()
    c = Chaos(shardstream_bin, "s3://chaos/ds", minio, logs)
    try:
        c.start_ranks(STEP_TIME)
        ds = pack_local(
            shardstream_bin,
            tmp_path / "ds",
            SAMPLES,
            shard_size="4MiB",
            size=SAMPLE_BYTES,
            spread=7,
        )
        minio.create_bucket("chaos")
        minio.put_dir(Path(ds.path), "chaos", "ds")
        yield c, ds
    finally:
        c.stop()


def test_chaos_epoch(chaos: tuple[Chaos, Packed]) -> None:
    c, ds = chaos
    manifest = json.loads((Path(ds.path) / "manifest.json").read_text())
    steps = SAMPLES // (WORLD * BATCH)
    rng = random.Random(seed())
    c.start(loaders=3)
    # Each failure at a random step of its own stretch of the epoch's first
    # 70%, or after the previous one settled if that is later.
    first, last = steps // 20, steps * 7 // 10
    stretch = (last - first) // len(KINDS)
    for i, kind in enumerate(KINDS):
        c.fire(kind, first + i * stretch + rng.randrange(stretch // 2), rng)
    c.wait(lambda: all(r.done is not None for r in c.ranks), "every rank finished", EPOCH_TIMEOUT)
    for r in c.ranks:
        assert r.proc.wait(timeout=WAIT) == 0, f"rank {r.rank}\n{c.report()}"
    try:
        check_epoch(c.ranks, ds, manifest)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{c.report()}") from None
    found = pauses(c.ranks, c.events)
    normal = statistics.median(r.normal_step() for r in c.ranks)
    start = min(r.records[0]["t"] for r in c.ranks)
    end = max(r.records[-1]["t"] for r in c.ranks)
    lines = [
        f"chaos epoch (seed {seed()}): {steps} steps a rank in {end - start:.1f}s, "
        f"normal step {normal:.3f}s"
    ]
    for p, ev in zip(found, c.events, strict=True):
        at = f"at {ev.t0 - start:4.1f}s; rank {p.rank}, step {p.step}"
        lines.append(f"  {p.kind:30} {p.what:28} pause {p.seconds:5.2f}s ({at})")
    reconnects = [r.done["reconnects"] for r in c.ranks if r.done]
    lines.append(f"  reconnects per rank: {reconnects}")
    print("\n".join(lines))
    if os.environ.get("SHARDSTREAM_CHAOS_REPORT"):
        # One JSON line per run, for the pauses table in docs/failure-model.md.
        with open(os.environ["SHARDSTREAM_CHAOS_REPORT"], "a") as f:
            row = {"seed": seed(), "normal_step": normal, "pauses": [vars(p) for p in found]}
            f.write(json.dumps(row) + "\n")
    log.info("\n".join(lines))
    assert sum(reconnects) > 0, "no stream was ever broken: the failures missed the epoch"


# The checks themselves, on made-up records: they must catch what they are for.


def made_up(
    world: int, batch: int, steps: int, samples: int
) -> tuple[list[Records], Packed, dict[str, Any]]:
    """Records of an epoch that went right: rank r's step k holds the
    samples (0, n) for n from (k*world + r)*batch on; one shard."""
    manifest = {"shards": [{"samples": samples}]}
    dropped = samples - world * batch * steps
    ranks = []
    for r in range(world):
        recs = [
            {
                "step": k,
                "t": float(k),
                "ids": [[0, (k * world + r) * batch + j] for j in range(batch)],
            }
            for k in range(steps)
        ]
        done = {"steps": steps, "samples": samples - dropped, "dropped": dropped}
        ranks.append(Records(r, recs, done))
    return ranks, Packed("made-up", samples, 1), manifest


def test_check_epoch_catches() -> None:
    ranks, ds, manifest = made_up(2, 2, 3, 13)
    check_epoch(ranks, ds, manifest)  # 1 sample dropped, as planned
    ranks[1].records[2]["ids"][0] = ranks[0].records[0]["ids"][0]
    with pytest.raises(AssertionError, match=r"1 samples repeated .*\(0, 0\)"):
        check_epoch(ranks, ds, manifest)
    ranks, ds, manifest = made_up(2, 2, 3, 13)
    del ranks[1].records[2]["ids"][1]
    with pytest.raises(AssertionError, match=r"2 samples never arrived, the plan dropped 1"):
        check_epoch(ranks, ds, manifest)
    ranks, ds, manifest = made_up(2, 2, 3, 13)
    ranks[0].records.pop()
    with pytest.raises(AssertionError, match=r"steps taken per rank \{0: 2, 1: 3\}"):
        check_epoch(ranks, ds, manifest)
    ranks, ds, manifest = made_up(2, 2, 3, 13)
    ranks[0].records[1]["step"], ranks[0].records[2]["step"] = 2, 1
    with pytest.raises(AssertionError, match=r"rank 0: steps out of order: \[0, 2, 1\]"):
        check_epoch(ranks, ds, manifest)


def test_pauses_attribution() -> None:
    # Normal step 1 s; a 1.5 s gap ending after failure a, a 2.5 s gap that
    # began before failure b and ended after it.
    ts = [0.0, 1.0, 2.0, 3.5, 4.5, 5.5, 8.0, 9.0, 10.0]
    rank = Records(0, [{"step": k, "t": t} for k, t in enumerate(ts)])
    events = [Event("a", "", 3.2), Event("b", "", 7.0)]
    got = [(p.kind, p.seconds, p.step) for p in pauses([rank], events)]
    assert got == [("a", 0.5, 3), ("b", 1.5, 6)]
    # No gap over normal: 0, no rank.
    assert pauses([rank], [Event("c", "", 9.5)])[0].seconds == 0.0
