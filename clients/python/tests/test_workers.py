"""DataLoader workers, len(), exit and message limits against the real
server: any num_workers gives the batches of num_workers=0 in the same
order; state_dict() follows the training loop through ShardStreamLoader and
resumes with another num_workers; a script that stops early exits."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from torch.utils.data import DataLoader

import shardstream
from tests.conftest import workers_kw
from tests.servertest import Server
from tests.test_server import check_sample, numbers, read_epoch, take

# num_workers=4 on a small machine: torch's warning about more workers than
# cores is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")

KW: dict[str, Any] = {"seed": 11, "epoch": 2, "batch_size": 16}


def ids(batch: shardstream.Batch) -> list[tuple[int, int]]:
    return [(s["__shard__"], s["__index__"]) for s in batch]


def decode_numbers(batch: shardstream.Batch) -> tuple[int, str, list[int]]:
    """Module level: spawned DataLoader workers unpickle it."""
    return batch.step, batch.resume_token, [check_sample(s) for s in batch]


@pytest.mark.parametrize("workers", [0, 1, 2, 4])
def test_num_workers_same_order(server: Server, workers: int) -> None:
    want = list(shardstream.ShardStreamDataset(server.address, rank=1, world_size=2, **KW))
    ds = shardstream.ShardStreamDataset(server.address, rank=1, world_size=2, **KW)
    # Workers from the fork server: this test process has made gRPC calls.
    got = list(DataLoader(ds, batch_size=None, **workers_kw(workers)))
    assert [b.step for b in got] == list(range(len(want)))
    assert [ids(b) for b in got] == [ids(b) for b in want]
    assert [b.resume_token for b in got] == [b.resume_token for b in want]


@pytest.mark.parametrize(("before", "after"), [(0, 2), (2, 4), (4, 1), (1, 0)])
def test_resume_with_other_num_workers(server: Server, before: int, after: int) -> None:
    whole, _ = read_epoch(server.address, 1, **KW)
    ds = shardstream.ShardStreamDataset(server.address, rank=0, world_size=1, **KW)
    loader = shardstream.ShardStreamLoader(ds, num_workers=before)
    it = iter(loader)
    taken = take(it, 7)
    # The main process's dataset holds the token of the last batch the
    # loop took, not of one a worker prefetched.
    state = ds.state_dict()
    assert state == loader.state_dict()
    assert state["resume_token"] == taken[-1].resume_token
    assert state["epoch"] == KW["epoch"]
    del it

    ds = shardstream.ShardStreamDataset(server.address, rank=0, world_size=1, **KW)
    ds.load_state_dict(state)
    assert len(ds) == len(whole[0]) // KW["batch_size"] - 7
    rest = list(shardstream.ShardStreamLoader(ds, num_workers=after))
    assert [b.step for b in rest] == list(range(len(rest)))
    assert numbers(taken) + numbers(rest) == whole[0], "a sample lost or repeated at the resume"
    assert ds.state_dict()["resume_token"] == rest[-1].resume_token


def test_loader_token_through_decode(server: Server) -> None:
    # With decode the items are not Batches; the token still reaches the
    # main process's dataset, and collate_fn gets the decoded item.
    want = [decode_numbers(b) for b in shardstream.ShardStreamDataset(server.address, **KW)]
    ds = shardstream.ShardStreamDataset(server.address, decode=decode_numbers, **KW)
    loader = shardstream.ShardStreamLoader(ds, num_workers=2, pin_memory=False)
    assert len(loader) == len(want)
    got = []
    for step, token, nums in loader:
        assert ds.state_dict()["resume_token"] == token
        got.append((step, token, nums))
    assert got == want


def test_loader_refuses(server: Server) -> None:
    ds = shardstream.ShardStreamDataset(server.address, **KW)
    with pytest.raises(ValueError, match="batch_size"):
        shardstream.ShardStreamLoader(ds, batch_size=4)
    with pytest.raises(ValueError, match="persistent_workers"):
        shardstream.ShardStreamLoader(ds, num_workers=2, persistent_workers=True)
    with pytest.raises(ValueError, match="in_order"):
        shardstream.ShardStreamLoader(ds, num_workers=2, in_order=False)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_len(server: Server, world_size: int) -> None:
    kw: dict[str, Any] = {"seed": 4, "batch_size": 7}
    for rank in range(world_size):
        ds = shardstream.ShardStreamDataset(server.address, rank=rank, world_size=world_size, **kw)
        n = len(ds)
        # The rank's total with workers too: DataLoader asks the dataset.
        assert len(DataLoader(ds, batch_size=None, num_workers=2)) == n
        assert len(list(ds)) == n
    # After a resume token: what is left.
    ds = shardstream.ShardStreamDataset(server.address, rank=0, world_size=world_size, **kw)
    it = iter(ds)
    take(it, 3)
    del it
    assert len(ds) == n - 3


def run_script(
    path: Path, text: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Runs ``text`` as a fresh Python process (this one's sys.path) with
    ``args``; one that does not exit within ``timeout`` fails the test."""
    path.write_text(textwrap.dedent(text))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    try:
        return subprocess.run(
            [sys.executable, str(path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(
            f"{path.name} did not exit within {timeout}s; output: {e.stdout!r} {e.stderr!r}"
        )


# The script of the issue: a step-based loop that stops after three
# batches and falls off the end of the script.
EXIT_SCRIPT = """
import sys
import shardstream
from torch.utils.data import DataLoader

def main():
    ds = shardstream.ShardStreamDataset(sys.argv[1], batch_size=4, prefetch=int(sys.argv[3]))
    form = sys.argv[2]
    if form == "iter":
        it = iter(ds)
    else:
        it = iter(DataLoader(ds, batch_size=None, num_workers=int(form)))
    for _ in range(3):
        next(it)
    print("took 3", flush=True)
    return it  # kept alive to the end, like a module-level `it`

if __name__ == "__main__":
    it = main()
"""


# The prefetch thread (prefetch > 0, the default 2) is running, and
# blocked with its buffer full, when the script ends.
@pytest.mark.parametrize(
    ("form", "prefetch"),
    [("iter", 0), ("iter", 2), ("iter", 8), ("0", 2), ("2", 2)],
    ids=["iter(ds)", "iter(ds)-prefetch", "iter(ds)-prefetch8", "DataLoader", "workers"],
)
def test_script_that_stops_early_exits(
    server: Server, tmp_path: Path, form: str, prefetch: int
) -> None:
    start = time.monotonic()
    r = run_script(tmp_path / "stop_early.py", EXIT_SCRIPT, server.address, form, str(prefetch))
    took = time.monotonic() - start
    assert r.returncode == 0, r.stderr
    assert "took 3" in r.stdout
    # Importing torch takes a few seconds; a hang at exit takes forever.
    assert took < 30, f"the script took {took:.1f}s to exit"


# A fresh process: a fork before any gRPC call is quiet; after one (len()
# asks the coordinator) it is warned about, once; workers from
# worker_context() (ShardStreamLoader's default) are not forks of this
# process and read the epoch in order.
FORK_SCRIPT = """
import os
import sys
import warnings

import shardstream


def fork_and_wait():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def main():
    warnings.simplefilter("always")
    ds = shardstream.ShardStreamDataset(sys.argv[1], batch_size=4)
    with warnings.catch_warnings(record=True) as before:
        fork_and_wait()
    n = len(ds)
    with warnings.catch_warnings(record=True) as after:
        fork_and_wait()
        fork_and_wait()
    with warnings.catch_warnings(record=True) as loader:
        steps = [b.step for b in shardstream.ShardStreamLoader(ds, num_workers=2)]
    print("before", len(before))
    print("after", len(after), after[0].message if after else "")
    print("loader", [str(w.message) for w in loader if "fork" in str(w.message)])
    print("context", shardstream.worker_context().get_start_method())
    print("steps", steps == list(range(n)))


if __name__ == "__main__":
    main()
"""


def test_fork_after_grpc_is_warned_and_worker_context_avoids_it(
    server: Server, tmp_path: Path
) -> None:
    r = run_script(tmp_path / "fork.py", FORK_SCRIPT, server.address, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert lines["before"] == "0"
    assert lines["after"].startswith("1 shardstream: this process forks after using gRPC")
    assert "worker_context()" in lines["after"]
    assert lines["loader"] == "[]"
    assert lines["context"] == "forkserver"
    assert lines["steps"] == "True"


def test_batch_over_message_limit_fails_at_once(server: Server) -> None:
    # A batch of 16 samples of 200-500 bytes is over 1000 bytes: the same
    # batch would be too large on every retry, so it fails at once (not after
    # retry_timeout) and says how to fix it.
    ds = shardstream.ShardStreamDataset(
        server.address, batch_size=16, max_message_bytes=1000, retry_timeout=60
    )
    start = time.monotonic()
    with pytest.raises(shardstream.ShardStreamError) as info:
        next(iter(ds))
    assert time.monotonic() - start < 10, "a too-large batch was retried"
    e = info.value
    assert e.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert e.method == "StreamBatches"
    assert "max_message_bytes=1000" in e.details
    assert "batch_size" in e.details
    assert ds.stats.reconnects == 0
