"""Rank and world size detection, and the DataLoader worker check."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch.distributed as dist

import shardstream
from shardstream import resolve_world


@pytest.mark.parametrize(
    ("kwargs", "want"),
    [
        ({}, (0, 1, "default")),
        ({"env": {"RANK": "3", "WORLD_SIZE": "4"}}, (3, 4, "environment")),
        ({"env": {"WORLD_SIZE": "4"}}, (0, 4, "environment")),
        ({"env": {"RANK": " ", "WORLD_SIZE": ""}}, (0, 1, "default")),
        ({"dist": (1, 2), "env": {"RANK": "3", "WORLD_SIZE": "4"}}, (1, 2, "torch.distributed")),
        ({"rank": 2, "world_size": 5, "dist": (1, 2)}, (2, 5, "arguments")),
        ({"rank": 1, "env": {"RANK": "0", "WORLD_SIZE": "2"}}, (1, 2, "arguments and environment")),
    ],
)
def test_resolve_world(kwargs: dict[str, object], want: tuple[int, int, str]) -> None:
    w = resolve_world(**kwargs)  # type: ignore[arg-type]
    assert (w.rank, w.world_size) == want[:2], f"resolve_world({kwargs}) = {w}"
    assert w.source.startswith(want[2]), f"resolve_world({kwargs}).source = {w.source!r}"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"env": {"RANK": "2", "WORLD_SIZE": "2"}}, ValueError, r"rank 2 from environment"),
        ({"env": {"RANK": "x"}}, ValueError, r"RANK='x'"),
        ({"rank": 0, "world_size": 0}, ValueError, r"world_size 0 from arguments"),
        ({"rank": -1, "world_size": 2}, ValueError, r"rank -1"),
        ({"dist": (4, 4)}, ValueError, r"torch.distributed"),
        ({"rank": True, "world_size": 2}, TypeError, r"want integers"),
    ],
)
def test_resolve_world_errors(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        resolve_world(**kwargs)  # type: ignore[arg-type]


def test_current_world_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    w = shardstream.current_world()
    assert (w.rank, w.world_size) == (1, 3)


def test_current_world_torch_distributed(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    # torch.distributed wins over the environment once it is initialised.
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "9")
    store = dist.HashStore()  # type: ignore[attr-defined]
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        w = shardstream.current_world()
        assert (w.rank, w.world_size, w.source) == (0, 1, "torch.distributed")
    finally:
        dist.destroy_process_group()


def test_current_worker_main_process() -> None:
    assert shardstream.current_worker() == (0, 1)


def test_dataloader_worker_reads_its_stripe(monkeypatch: pytest.MonkeyPatch) -> None:
    # As DataLoader worker 1 of 3 sees it: it asks for the steps 1, 4, 7, ...
    # of the rank (stride 3), and its copy of the dataset keeps the token it
    # started from (a worker's steps are not where the rank stands).
    from shardstream import _client

    monkeypatch.setattr(shardstream.dataset, "current_worker", lambda: (1, 3))
    plan = shardstream.Plan("fp", 10, 80, 0, 0, "", ("",))
    asked: dict[str, object] = {}

    def batches(
        self: object,
        plan: object,
        job: object,
        rank: int,
        stats: object,
        *,
        first: int,
        stride: int,
        columnar: bool = False,
        stripe: int = 0,
        max_loaders_per_rank: int = 1,
    ) -> Iterator[shardstream.Batch]:
        asked.update(rank=rank, first=first, stride=stride)
        for step in range(first, 10, stride):
            yield shardstream.Batch([], rank=rank, epoch=0, step=step, resume_token=f"t{step}")

    monkeypatch.setattr(_client.Client, "plan", lambda self, job, **kw: plan)
    monkeypatch.setattr(_client.Client, "batches", batches)
    ds = shardstream.ShardStreamDataset("127.0.0.1:1", batch_size=8, rank=2, world_size=3)
    assert [b.step for b in ds] == [1, 4, 7]
    assert asked == {"rank": 2, "first": 1, "stride": 3}
    assert ds.state_dict()["resume_token"] == ""
