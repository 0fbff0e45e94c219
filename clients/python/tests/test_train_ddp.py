"""examples/train_ddp.py under torchrun, killed with SIGKILL mid-epoch and
restarted from its checkpoint: with the same world size and num_workers,
with 1 rank and no workers, with 3 ranks and 1 worker each. Counting only
each killed run's steps up to its last checkpoint, plus the whole of the run
that finishes the epoch, every sample of the epoch is trained on exactly
once (drop-last aside)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import shardstream
from tests.conftest import REPO, SAMPLES
from tests.servertest import Server

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

EXAMPLE = REPO / "examples" / "train_ddp.py"
BATCH = 8
EVERY = 4  # steps between checkpoints
RUN_TIMEOUT = 240.0  # one torchrun start to stall or end; importing torch is slow on 2 loaded cores


@dataclass(frozen=True)
class Run:
    ranks: int
    workers: int
    stall: int  # the step the run hangs after until killed; 0: runs to the end
    resumed: str  # how train_ddp.py should say it resumed


# The step counter goes on across restarts; each killed run hangs two steps
# after a checkpoint, so its records run past the checkpoint and the test
# must drop them. Each torchrun start costs ~30-40 s on 2 loaded cores
# (importing torch), so the world and worker changes share runs.
RUNS = [
    Run(ranks=2, workers=2, stall=6, resumed="no"),
    Run(ranks=2, workers=2, stall=14, resumed="loader"),  # same layout: loader.load_state_dict
    Run(ranks=1, workers=0, stall=22, resumed="dataset"),  # 1 rank, no workers
    Run(ranks=3, workers=1, stall=0, resumed="dataset"),  # 3 ranks, 1 worker each, to the end
]


def _procs() -> dict[int, tuple[str, int, int]]:
    """pid -> (state, ppid, process group) of every process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        state, ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        out[int(name)] = (state, int(ppid), int(pgrp))
    return out


def _tree(root: int) -> set[int]:
    """root and its live descendants (torchrun, its ranks, their DataLoader workers)."""
    procs = _procs()
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in procs and procs[pid][0] != "Z":
            found.add(pid)
        todo += [p for p, (_, ppid, _) in procs.items() if ppid == pid and p not in found]
    return found


def kill_all(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL to torchrun's process group and to each rank's: torchrun
    starts every rank in a session of its own, with its DataLoader workers in
    the rank's group. Returns once none of them is alive."""
    pids = _tree(proc.pid)
    groups = {_procs().get(p, ("", 0, proc.pid))[2] for p in pids} | {proc.pid}
    groups.discard(os.getpgrp())  # never this test's own group
    for g in groups:
        with suppress(ProcessLookupError):
            os.killpg(g, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while alive := _tree(proc.pid) | (pids & set(p for p, s in _procs().items() if s[0] != "Z")):
        assert time.monotonic() < deadline, f"processes left after SIGKILL: {sorted(alive)}"
        time.sleep(0.05)  # polling the process table, with a deadline


def records(run_dir: Path) -> dict[int, list[dict[str, Any]]]:
    """Each rank's JSON lines (a line cut short by a kill is left out)."""
    out = {}
    for f in sorted(run_dir.glob("rank*.jsonl")):
        text = f.read_text()
        whole = text[: text.rfind("\n") + 1]
        out[int(f.stem.removeprefix("rank"))] = [json.loads(x) for x in whole.splitlines()]
    return out


def checkpoint_step(ckpt: Path) -> int:
    if not ckpt.exists():
        return -1
    return int(torch.load(ckpt, weights_only=True)["step"])


@contextmanager
def torchrun(
    run: Run, address: str, tmp: Path, i: int
) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    """Starts train_ddp.py under torchrun; kills whatever is left at exit."""
    log = tmp / f"run{i}.log"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc_per_node", str(run.ranks), str(EXAMPLE), "--address", address]
    cmd += ["--checkpoint-dir", str(tmp / "ckpt"), "--record-dir", str(tmp / f"run{i}")]
    cmd += ["--num-workers", str(run.workers), "--batch-size", str(BATCH)]
    cmd += ["--checkpoint-every", str(EVERY), "--stall-after-step", str(run.stall)]
    cmd += [
        "--feature-field",
        "bin",
        "--dim",
        "16",
        "--classes",
        "2",
        "--epoch",
        "3",
        "--seed",
        "9",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO / "clients" / "python"), OMP_NUM_THREADS="1")
    env["GLOO_SOCKET_IFNAME"] = "lo"  # no wait on resolving the host name
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        yield proc, log, tmp / f"run{i}"
    finally:
        kill_all(proc)


def checkpoint_at(ckpt: Path, step: int) -> Callable[[], bool]:
    return lambda: checkpoint_step(ckpt) == step


def at_step(rec: Path, run: Run) -> Callable[[], bool]:
    """Every rank of ``run`` has recorded the step it hangs after."""

    def ok() -> bool:
        r = records(rec)
        return len(r) == run.ranks and all(
            any(x.get("step") == run.stall for x in lines) for lines in r.values()
        )

    return ok


def wait_for(what: str, ok: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT
    while not ok():
        if proc.poll() is not None:
            pytest.fail(
                f"torchrun exited with {proc.returncode} before {what}:\n{log.read_text()[-6000:]}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} in {RUN_TIMEOUT}s:\n{log.read_text()[-6000:]}")
        time.sleep(0.1)  # polling files, with a deadline


def test_killed_and_restarted_every_sample_once(server: Server, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt" / "checkpoint.pt"
    kept: list[tuple[int, int]] = []  # the (shard, index) of every sample that counts
    start = 0  # where the next run must start: the last checkpoint's step
    for i, run in enumerate(RUNS):
        with torchrun(run, server.address, tmp_path, i) as (proc, log, rec):
            if run.stall:
                # The checkpoint two steps before the hang, then every rank
                # at the hang: the records then run past the checkpoint.
                want = run.stall - run.stall % EVERY
                wait_for(f"checkpoint at step {want}", checkpoint_at(ckpt, want), proc, log)
                wait_for(f"every rank at step {run.stall}", at_step(rec, run), proc, log)
                kill_all(proc)
                end = checkpoint_step(ckpt)
                assert end == want, f"run {i}: checkpoint at {end} after the kill, want {want}"
            else:
                try:
                    proc.wait(timeout=RUN_TIMEOUT)
                except subprocess.TimeoutExpired:
                    pytest.fail(
                        f"run {i} did not finish in {RUN_TIMEOUT}s:\n{log.read_text()[-6000:]}"
                    )
                assert proc.returncode == 0, f"run {i} failed:\n{log.read_text()[-6000:]}"
                end = checkpoint_step(ckpt)
            got = records(rec)
            assert sorted(got) == list(range(run.ranks)), f"run {i}: records of ranks {sorted(got)}"
            steps: set[tuple[int, ...]] = set()
            for rank, lines in got.items():
                head = lines[0]
                assert head["start"] == start, (
                    f"run {i} rank {rank} started at {head['start']}, want {start}"
                )
                assert head["resumed"] == run.resumed, f"run {i} rank {rank}: {head}"
                trained = [x for x in lines if "step" in x]
                assert [x["step"] for x in trained] == list(
                    range(start + 1, start + 1 + len(trained))
                )
                if run.stall:
                    assert trained[-1]["step"] > end, (
                        "the kill came before any step after the checkpoint"
                    )
                else:
                    assert lines[-1] == {"done": end}, (
                        f"run {i} rank {rank} did not finish: {lines[-1]}"
                    )
                counted = [x for x in trained if x["step"] <= end]
                steps.add(tuple(x["step"] for x in counted))
                kept += [(sh, ix) for x in counted for sh, ix in x["ids"]]
            assert len(steps) == 1, f"run {i}: ranks trained different steps: {steps}"
        if run.stall:
            last_data = torch.load(ckpt, weights_only=True)["data"]
        start = end

    # What the last run was planned from: the drop-last policy's share.
    token = shardstream.resume_state(last_data)["resume_token"]
    last = RUNS[-1].ranks
    kw: dict[str, Any] = {"seed": 9, "epoch": 3, "batch_size": BATCH, "resume_token": token}
    plan = shardstream.ShardStreamDataset(server.address, rank=0, world_size=last, **kw).plan()
    repeated = sorted(x for x, n in Counter(kept).items() if n > 1)
    assert not repeated, f"{len(repeated)} samples trained on twice: {repeated[:10]}"
    assert plan.dropped < last * BATCH
    assert len(kept) + plan.dropped == SAMPLES, (
        f"{len(kept)} samples trained on + {plan.dropped} dropped, want {SAMPLES}"
    )
