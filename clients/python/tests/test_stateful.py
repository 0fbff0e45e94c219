"""torchdata's StatefulDataLoader over a ShardStreamDataset, against the real
server: a state taken mid-epoch resumes exactly (no batch lost or repeated,
the order of an undisturbed run) through ``loader.load_state_dict`` with
the same num_workers, and through ``ds.load_state_dict(loader_state)`` with
another num_workers or another world size."""

from __future__ import annotations

from typing import Any

import pytest
from torchdata.stateful_dataloader import StatefulDataLoader

import shardstream
from shardstream._state import WorkerPosition, resume_state
from tests.conftest import workers_kw
from tests.servertest import Server
from tests.test_server import assert_exactly_once, numbers, read_epoch, take

# num_workers=4 on a small machine: torch's warning about more workers than
# cores is expected here.
# torchdata 0.11 calls torch.set_vital, which torch 2.15 deprecates.
pytestmark = [
    pytest.mark.filterwarnings("ignore:This DataLoader will create"),
    pytest.mark.filterwarnings("ignore:'set_vital' is deprecated"),
]

KW: dict[str, Any] = {"seed": 5, "epoch": 1, "batch_size": 16}


def taken_and_state(
    address: str, workers: int, steps: int, *, rank: int = 0, world_size: int = 1
) -> tuple[list[shardstream.Batch], dict[str, Any]]:
    """The first ``steps`` batches through a StatefulDataLoader and its
    state after them."""
    ds = shardstream.ShardStreamDataset(address, rank=rank, world_size=world_size, **KW)
    loader = StatefulDataLoader(ds, batch_size=None, **workers_kw(workers))
    it = iter(loader)
    got = take(it, steps)
    state = loader.state_dict()
    del it
    return got, state


def rest(
    address: str,
    workers: int,
    state: dict[str, Any],
    *,
    into: str,
    rank: int = 0,
    world_size: int = 1,
) -> list[shardstream.Batch]:
    ds = shardstream.ShardStreamDataset(address, rank=rank, world_size=world_size, **KW)
    loader = StatefulDataLoader(ds, batch_size=None, **workers_kw(workers))
    if into == "loader":
        loader.load_state_dict(state)
    else:
        ds.load_state_dict(state)
    return list(loader)


# (workers, steps taken): steps before every worker has yielded (2 of 4), on
# and off a round's boundary.
@pytest.mark.parametrize(("workers", "steps"), [(0, 5), (1, 3), (2, 7), (3, 6), (4, 2)])
def test_loader_load_state_dict_same_workers(server: Server, workers: int, steps: int) -> None:
    whole, _ = read_epoch(server.address, 1, **KW)
    taken, state = taken_and_state(server.address, workers, steps)
    assert [b.step for b in taken] == list(range(steps))
    after = rest(server.address, workers, state, into="loader")
    assert numbers(taken) + numbers(after) == whole[0], "a batch lost, repeated or reordered"
    # The merged state is the token of the last batch taken.
    assert resume_state(state) == {"resume_token": taken[-1].resume_token, "epoch": KW["epoch"]}


@pytest.mark.parametrize(("before", "after"), [(0, 2), (2, 4), (4, 1), (1, 0), (2, 0), (3, 2)])
def test_other_num_workers_through_dataset(server: Server, before: int, after: int) -> None:
    whole, _ = read_epoch(server.address, 1, **KW)
    taken, state = taken_and_state(server.address, before, 9)
    got = rest(server.address, after, state, into="dataset")
    assert numbers(taken) + numbers(got) == whole[0], "a batch lost, repeated or reordered"


def test_state_resumes_again(server: Server) -> None:
    # A resumed loader's state is itself resumable, both ways: positions keep
    # counting from the iteration's start.
    whole, _ = read_epoch(server.address, 1, **KW)
    first, state = taken_and_state(server.address, 2, 5)
    ds = shardstream.ShardStreamDataset(server.address, rank=0, world_size=1, **KW)
    loader = StatefulDataLoader(ds, batch_size=None, **workers_kw(2))
    loader.load_state_dict(state)
    it = iter(loader)
    second = take(it, 4)
    state = loader.state_dict()
    del it
    assert resume_state(state)["resume_token"] == second[-1].resume_token
    third = rest(server.address, 2, state, into="loader")
    assert numbers(first + second + third) == whole[0]


@pytest.mark.parametrize(("old_world", "new_world", "workers"), [(2, 3, 2), (2, 1, 1)])
def test_other_world_size(server: Server, old_world: int, new_world: int, workers: int) -> None:
    # Every old rank takes the same steps; rank 0's loader state (the token is
    # the same on every rank) resumes the new world, which gets every sample
    # not yet taken exactly once.
    seen: list[int] = []
    state: dict[str, Any] = {}
    for r in range(old_world):
        taken, s = taken_and_state(server.address, 2, 6, rank=r, world_size=old_world)
        seen += numbers(taken)
        state = state or s
    after = [
        rest(server.address, workers, state, into="dataset", rank=r, world_size=new_world)
        for r in range(new_world)
    ]
    assert len({len(a) for a in after}) == 1, "new ranks not balanced"
    plan = shardstream.ShardStreamDataset(
        server.address,
        rank=0,
        world_size=new_world,
        **KW,
        resume_token=resume_state(state)["resume_token"],
    ).plan()
    assert_exactly_once(seen + [n for a in after for n in numbers(a)], plan.dropped)


def test_loader_state_into_other_world_is_refused(server: Server) -> None:
    # One worker's own state cannot know where the rank stands: resuming it
    # on another world size would lose or repeat batches, so it is refused
    # with a message saying what to do.
    _, state = taken_and_state(server.address, 2, 5, rank=0, world_size=2)
    ds = shardstream.ShardStreamDataset(server.address, rank=0, world_size=3, **KW)
    loader = StatefulDataLoader(ds, batch_size=None, **workers_kw(2))
    loader.load_state_dict(state)
    with pytest.raises(ValueError, match=r"world size 2 cannot resume .*ds\.load_state_dict"):
        list(loader)


# ---- the state alone, no server ------------------------------------------


def position(worker: int, steps: int, *, workers: int = 2, start: str = "S") -> dict[str, Any]:
    pos = WorkerPosition(3, start, worker, workers, 1, steps, f"T{steps}" if steps else start)
    return {"worker_id": worker, "dataset_state": pos.state()}


def test_resume_state_merges_workers() -> None:
    loader_state = {
        "_snapshot": {"_worker_snapshots": {"w0": position(0, 7), "w1": position(1, 6)}}
    }
    assert resume_state(loader_state) == {"resume_token": "T7", "epoch": 3}
    none_yet = {"w0": position(0, 0), "w1": position(1, 0)}
    assert resume_state(none_yet) == {"resume_token": "S", "epoch": 3}
    plain = {"dataset_state": {"resume_token": "X", "epoch": 2}}
    assert resume_state(plain) == {"resume_token": "X", "epoch": 2}


def test_resume_state_refuses() -> None:
    with pytest.raises(ValueError, match="neither a ShardStreamDataset state"):
        resume_state({"model": {}})
    with pytest.raises(ValueError, match=r"workers \[0\]; want each of the 2"):
        resume_state({"w0": position(0, 3)})
    with pytest.raises(ValueError, match="not one loader's workers"):
        resume_state({"w0": position(0, 3), "w1": position(1, 2, start="other")})
    with pytest.raises(ValueError, match="snapshot_every_n_steps"):
        resume_state({"_steps_since_snapshot": 2, "w0": position(0, 3, workers=1)})
    with pytest.raises(ValueError, match=r"worker\.steps"):
        resume_state(
            {"epoch": 1, "worker": {**position(0, 1)["dataset_state"]["worker"], "steps": -1}}
        )


def test_worker_position_resume() -> None:
    # Worker 1 of 3 that has handed over step 4 (steps 0..4 counted) reads
    # step 7 next: 2 after the token of step 4.
    pos = WorkerPosition(0, "S", 1, 3, 2, 5, "T5")
    assert pos.resume() == ("T5", 2)
    assert WorkerPosition(0, "S", 1, 3, 2, 0, "S").resume() == ("S", 1)
    assert WorkerPosition.parse(pos.state()) == pos


def test_state_at_end_of_epoch(server: Server) -> None:
    # torchdata ignores a finished loader state and starts a fresh iteration
    # from the dataset; loaded into the dataset too, that is the epoch's end.
    ds = shardstream.ShardStreamDataset(server.address, rank=0, world_size=1, **KW)
    loader = StatefulDataLoader(ds, batch_size=None, **workers_kw(2))
    assert list(loader)
    state = loader.state_dict()
    ds = shardstream.ShardStreamDataset(server.address, rank=0, world_size=1, **KW)
    loader = StatefulDataLoader(ds, batch_size=None, **workers_kw(2))
    ds.load_state_dict(state)
    loader.load_state_dict(state)
    assert list(loader) == []


def test_torchdata_refuses_other_num_workers(server: Server) -> None:
    # Why ds.load_state_dict is the way to change num_workers: torchdata's
    # own load_state_dict refuses it (if this starts passing, the docs'
    # "torchdata's StatefulDataLoader" section can say so).
    _, state = taken_and_state(server.address, 2, 3)
    ds = shardstream.ShardStreamDataset(server.address, rank=0, world_size=1, **KW)
    loader = StatefulDataLoader(ds, batch_size=None, **workers_kw(3))
    loader.load_state_dict(state)
    with pytest.raises(AssertionError):
        iter(loader)
