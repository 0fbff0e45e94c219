"""The client's pure parts: argument checks, state, wire conversion."""

from __future__ import annotations

import pickle
import time
from typing import Any

import grpc
import pytest

import shardstream
from shardstream import _convert
from shardstream.v1 import shardstream_pb2 as pb


def make(**kw: Any) -> shardstream.ShardStreamDataset:
    kw.setdefault("batch_size", 8)
    return shardstream.ShardStreamDataset("127.0.0.1:1", **kw)


def test_job_spec() -> None:
    ds = make(seed=7, epoch=3, window=5, last_batch="pad", dataset="d", resume_token="tok")
    assert ds.job(4) == pb.JobSpec(
        dataset="d",
        seed=7,
        epoch=3,
        world_size=4,
        batch_size=8,
        window=5,
        last_batch=pb.LAST_BATCH_POLICY_PAD,
        resume_token="tok",
    )
    assert make().job(1).last_batch == pb.LAST_BATCH_POLICY_DROP


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_size": -1}, ValueError, "batch_size: -1"),
        ({"batch_size": 1 << 32}, ValueError, "batch_size"),
        ({"batch_size": 2.0}, TypeError, "batch_size"),
        ({"seed": -1}, ValueError, "seed"),
        ({"last_batch": "keep"}, ValueError, "last_batch: 'keep'"),
        ({"world_size": 0}, ValueError, "world_size"),
        ({"resume_token": 5}, TypeError, "resume_token"),
        ({"timeout": 0}, ValueError, "timeout"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make(**kwargs)


def test_bad_address() -> None:
    with pytest.raises(ValueError, match="address"):
        shardstream.ShardStreamDataset("", batch_size=1)


def test_state_dict_round_trip() -> None:
    ds = make(epoch=2, resume_token="abc")
    assert ds.state_dict() == {"resume_token": "abc", "epoch": 2}
    other = make()
    other.load_state_dict(ds.state_dict())
    assert other.state_dict() == {"resume_token": "abc", "epoch": 2}
    assert other.job(2).resume_token == "abc"
    assert other.job(2).epoch == 2


def test_set_epoch() -> None:
    ds = make(epoch=2, resume_token="abc")
    ds.set_epoch(2)  # the same epoch keeps the checkpoint's token
    assert ds.state_dict() == {"resume_token": "abc", "epoch": 2}
    ds.set_epoch(3)  # a new epoch starts from its beginning
    assert ds.state_dict() == {"resume_token": "", "epoch": 3}


@pytest.mark.parametrize(
    ("state", "error"),
    [
        ({"resume_token": 1, "epoch": 0}, TypeError),
        ({"resume_token": ""}, TypeError),
        ({"resume_token": "", "epoch": -1}, ValueError),
    ],
)
def test_load_state_dict_rejects(state: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        make().load_state_dict(state)


def test_batch_from_proto() -> None:
    b = pb.Batch(
        rank=1,
        epoch=2,
        step=3,
        resume_token="t",
        samples=[
            pb.Sample(
                shard=4,
                index=5,
                key="k",
                fields=[pb.Field(name="cls", data=b"1"), pb.Field(name="input.npy", data=b"x")],
            )
        ],
    )
    got = _convert.batch_from_proto(b)
    assert list(got) == [
        {"__key__": "k", "__shard__": 4, "__index__": 5, "cls": b"1", "input.npy": b"x"}
    ]
    assert (got.rank, got.epoch, got.step, got.resume_token) == (1, 2, 3, "t")
    # Batches cross process boundaries (DataLoader workers) intact.
    again = pickle.loads(pickle.dumps(got))
    assert list(again) == list(got)
    assert (again.step, again.resume_token) == (3, "t")


def test_public_names() -> None:
    # What users import: the dataset, its types, its error and the rank
    # helpers; no protobuf. Names of the one-module client keep working.
    assert not [n for n in shardstream.__all__ if "proto" in n or n.startswith("_")]
    for name in shardstream.__all__:
        assert getattr(shardstream, name) is not None
    assert shardstream.batch_from_proto is _convert.batch_from_proto
    assert shardstream.sample_from_proto is _convert.sample_from_proto
    from shardstream.dataset import Batch, Plan, Sample, Stats, batch_from_proto

    assert (Batch, Plan, Sample, Stats) == (
        shardstream.Batch,
        shardstream.Plan,
        shardstream.Sample,
        shardstream.Stats,
    )
    assert batch_from_proto is _convert.batch_from_proto


def test_dataset_pickles() -> None:
    # DataLoader workers started with spawn get a pickled copy.
    ds = make(seed=3)
    again = pickle.loads(pickle.dumps(ds))
    assert again.job(2) == ds.job(2)


def test_unreachable_server_is_an_error() -> None:
    ds = shardstream.ShardStreamDataset(
        "127.0.0.1:1", batch_size=4, rank=0, world_size=1, timeout=0.5
    )
    start = time.monotonic()
    with pytest.raises(shardstream.ShardStreamError) as info:
        next(iter(ds))
    assert info.value.method == "PlanEpoch"
    assert info.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert "127.0.0.1:1" in str(info.value)
    assert time.monotonic() - start < 10


def test_backoff_has_jitter() -> None:
    import random

    from shardstream._client import backoff

    rng = random.Random(1)
    for failures, top in [(1, 0.1), (2, 0.2), (5, 1.6), (6, 2.0), (50, 2.0)]:
        delays = [backoff(failures, rng) for _ in range(100)]
        assert all(top / 2 <= d <= top for d in delays), (failures, min(delays), max(delays))
        assert len(set(delays)) > 90, "no jitter: ranks would come back in lockstep"


class _FakeCall(grpc.RpcError, grpc.Call):  # type: ignore[misc]  # stubs disagree on trailing_metadata
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    # The rest of grpc.Call, unused here.
    def initial_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: object) -> bool:
        return False


def test_too_large_hint() -> None:
    from shardstream._client import too_large_hint

    ex = grpc.StatusCode.RESOURCE_EXHAUSTED
    # grpc-core, over this client's limit.
    hint = too_large_hint(_FakeCall(ex, "Received message larger than max (5000 vs. 1000)"), 1000)
    assert hint is not None
    assert "5000 bytes" in hint
    assert "max_message_bytes=1000" in hint
    assert "batch_size" in hint
    # grpc-go, over the loader's send limit.
    hint = too_large_hint(
        _FakeCall(ex, "grpc: trying to send message larger than max (300 vs. 200)"), 1000
    )
    assert hint is not None
    assert "loader's limit of 200" in hint
    # A full loader is retried, not this.
    assert too_large_hint(_FakeCall(ex, "loader: 64 streams open"), 1000) is None
    assert (
        too_large_hint(_FakeCall(grpc.StatusCode.INTERNAL, "larger than max (1 vs. 0)"), 9) is None
    )


def test_loader_address_stripes() -> None:
    from shardstream._client import loader_address

    plan = shardstream.Plan(
        "fp", 10, 80, 0, 0, "", ("a:1", "b:1"), rank_loaders=(("a:1", "b:1"), ("b:1", "a:1"))
    )
    assert [loader_address(plan, 1, 0, "c:1", stripe=j) for j in (0, 1)] == ["b:1", "a:1"]
    # Then the plan's others in turn.
    assert loader_address(plan, 0, 1, "c:1", stripe=1) == "a:1"
    # A plan with fewer stripe loaders (one left the pool) still gives one.
    one = shardstream.Plan("fp", 10, 80, 0, 0, "", ("a:1",), rank_loaders=(("a:1",),))
    assert loader_address(one, 0, 0, "c:1", stripe=1) == "a:1"
    # A plan without stripes: loader_addresses, empty is the coordinator.
    old = shardstream.Plan("fp", 10, 80, 0, 0, "", ("",))
    assert loader_address(old, 0, 0, "c:1", stripe=1) == "c:1"


def test_loader_address_avoids_failed() -> None:
    from shardstream._client import loader_address

    # The coordinator still lists a:1, which just failed (it has not missed
    # enough heartbeats to be dropped), and the new plan gives this stripe
    # b:1: the next stream goes to b:1, not to a:1 because attempt 1 picks
    # the second address of the new order.
    plan = shardstream.Plan("fp", 10, 80, 0, 0, "", ("b:1",), rank_loaders=(("b:1", "a:1", "c:1"),))
    assert loader_address(plan, 0, 1, "x:1", avoid={"a:1"}) == "b:1"
    # The plan names the failed one for this stripe: the next in order.
    assert loader_address(plan, 0, 1, "x:1", stripe=1, avoid={"a:1"}) == "b:1"
    assert loader_address(plan, 0, 2, "x:1", stripe=1, avoid={"a:1", "b:1"}) == "c:1"
    # All failed: in turn by attempt, as without avoid.
    every = {"a:1", "b:1", "c:1"}
    got = [loader_address(plan, 0, n, "x:1", stripe=1, avoid=every) for n in range(3)]
    assert got == [loader_address(plan, 0, n, "x:1", stripe=1) for n in range(3)]
    assert sorted(got) == sorted(every)
