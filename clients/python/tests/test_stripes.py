"""One rank fed by K loaders (max_loaders_per_rank): against a real
coordinator and its loaders, K stripes give the batches of one stream in the
same order, with DataLoader workers too, and a loader that dies mid-epoch
loses or repeats no sample."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from torch.utils.data import DataLoader

import shardstream
from tests.conftest import Packed, pack_local, workers_kw
from tests.servertest import Server

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")

KW: dict[str, Any] = {"seed": 5, "epoch": 1, "batch_size": 8}
POOL_TIMEOUT = 60.0


class Cluster:
    """``shardstream coordinator`` and ``loaders`` loaders over one dataset."""

    def __init__(
        self,
        bin_path: Path,
        data: str,
        logs: Path,
        loaders: int,
        # Loaders stop in a fraction of a second: no load balancer here
        # needs --pre-stop's default 5 s to notice a drain.
        loader_extra: tuple[str, ...] = ("--pre-stop", "200ms"),
    ) -> None:
        self.bin_path, self.data, self.logs, self.loader_extra = bin_path, data, logs, loader_extra
        self.coordinator = Server(
            bin_path,
            data,
            log=logs / "coordinator.log",
            role="coordinator",
            extra=("--pool-timeout", "2s"),
        )
        self.loaders: list[Server] = []
        self.coordinator.start()
        for _ in range(loaders):
            self.add_loader()
        self.wait_pool(loaders)

    def add_loader(self) -> Server:
        """Starts one more loader; it joins the pool with its first beat."""
        s = Server(
            self.bin_path,
            self.data,
            log=self.logs / f"loader{len(self.loaders)}.log",
            role="loader",
            extra=("--coordinator", self.coordinator.address, *self.loader_extra),
        )
        s.start()
        self.loaders.append(s)
        return s

    @property
    def address(self) -> str:
        return self.coordinator.address

    def wait_pool(self, k: int) -> None:
        """Polls PlanEpoch until it gives rank 0 ``k`` stripe loaders (the
        loaders' first heartbeats reached the coordinator)."""
        ds = shardstream.ShardStreamDataset(
            self.address, rank=0, world_size=1, max_loaders_per_rank=k, **KW
        )
        deadline = time.monotonic() + POOL_TIMEOUT
        while True:
            plan = ds.plan()
            if plan.rank_loaders and len(plan.rank_loaders[0]) == k:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"pool of {k} not formed in {POOL_TIMEOUT}s: {plan}")
            time.sleep(0.05)  # polling the coordinator, not synchronising

    def stop(self) -> None:
        for s in self.loaders:
            s.stop()
        self.coordinator.stop()


@pytest.fixture(scope="module")
def cluster(
    shardstream_bin: Path, dataset: Packed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    c = Cluster(shardstream_bin, dataset.path, tmp_path_factory.mktemp("stripes"), 2)
    yield c
    c.stop()


def ids(batch: shardstream.Batch) -> list[tuple[int, int]]:
    return [(s["__shard__"], s["__index__"]) for s in batch]


def summary(batches: list[shardstream.Batch]) -> list[tuple[int, str, list[tuple[int, int]]]]:
    return [(b.step, b.resume_token, ids(b)) for b in batches]


def test_two_stripes_same_order(cluster: Cluster, dataset: Packed) -> None:
    one = list(shardstream.ShardStreamDataset(cluster.address, rank=0, world_size=1, **KW))
    ds = shardstream.ShardStreamDataset(
        cluster.address, rank=0, world_size=1, max_loaders_per_rank=2, **KW
    )
    assert len(ds) == len(one)
    two = list(ds)
    assert ds.last_plan is not None
    assert len(set(ds.last_plan.rank_loaders[0])) == 2
    assert {a for a in ds.last_plan.rank_loaders[0]} == {s.address for s in cluster.loaders}
    assert summary(two) == summary(one)
    assert [b.step for b in two] == list(range(len(two)))
    seen = [i for b in two for i in ids(b)]
    assert len(seen) == len(set(seen)) == dataset.samples - dataset.samples % KW["batch_size"]
    assert ds.state_dict()["resume_token"] == two[-1].resume_token


@pytest.mark.parametrize("workers", [2, 3])
def test_two_stripes_with_workers(cluster: Cluster, workers: int) -> None:
    one = list(shardstream.ShardStreamDataset(cluster.address, rank=1, world_size=2, **KW))
    ds = shardstream.ShardStreamDataset(
        cluster.address, rank=1, world_size=2, max_loaders_per_rank=2, **KW
    )
    got = list(DataLoader(ds, batch_size=None, **workers_kw(workers)))
    assert summary(got) == summary(one)


def test_more_stripes_than_loaders(cluster: Cluster) -> None:
    one = list(shardstream.ShardStreamDataset(cluster.address, rank=0, world_size=1, **KW))
    ds = shardstream.ShardStreamDataset(
        cluster.address, rank=0, world_size=1, max_loaders_per_rank=8, **KW
    )
    assert summary(list(ds)) == summary(one)
    assert ds.last_plan is not None
    assert len(ds.last_plan.rank_loaders[0]) == 2


def test_max_loaders_per_rank_checked() -> None:
    with pytest.raises(ValueError, match="max_loaders_per_rank"):
        shardstream.ShardStreamDataset("x:1", batch_size=1, max_loaders_per_rank=0)
    with pytest.raises(ValueError, match="max_loaders_per_rank"):
        shardstream.ShardStreamDataset("x:1", batch_size=1, max_loaders_per_rank=1025)


def test_loader_killed_mid_epoch(
    shardstream_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Batches big enough (1 MiB, ~15 MiB a stripe) that a stream cannot have
    # sent all of its stripe into the client's flow-control window before
    # the loader dies (at ~256 KiB batches it sometimes had).
    root = tmp_path_factory.mktemp("big")
    big = pack_local(shardstream_bin, root, 240, shard_size="4MiB", size=128 << 10, spread=7)
    c = Cluster(shardstream_bin, big.path, root, 2)
    try:
        kw = {**KW, "batch_size": 8, "retry_timeout": 30.0}
        one = list(shardstream.ShardStreamDataset(c.address, rank=0, world_size=1, **kw))
        ds = shardstream.ShardStreamDataset(
            c.address, rank=0, world_size=1, max_loaders_per_rank=2, **kw
        )
        it = iter(ds)
        got = [next(it) for _ in range(3)]
        assert ds.last_plan is not None
        victim = ds.last_plan.rank_loaders[0][1]
        for s in c.loaders:
            if s.address == victim:
                s.kill()
        got += list(it)
        assert summary(got) == summary(one)
        seen = [i for b in got for i in ids(b)]
        assert len(seen) == len(set(seen)) == big.samples
        assert ds.stats.reconnects >= 1, "the killed loader's stream never failed"
    finally:
        c.stop()
