"""Training from a dataset in S3: a real MinIO on loopback, ``shardstream
pack`` to ``s3://bucket/prefix``, ``shardstream serve`` from there, and a
DataLoader per rank feeding a small model."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

import shardstream
from tests.conftest import pack, sample_files, write_files
from tests.servertest import MinIO, Server


def features(batch: shardstream.Batch) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Two features per sample from its bytes, and its class (cls mod 2)."""
    ids = [int(s["cls"]) for s in batch]
    for s, i in zip(batch, ids, strict=True):
        assert s["bin"] == sample_files(i, 200 + i % 300)["bin"], f"sample {i}: wrong bytes"
    x = torch.tensor(
        [[len(s["bin"]) / 500.0, (i % 7) / 7.0] for s, i in zip(batch, ids, strict=True)]
    )
    y = torch.tensor([i % 2 for i in ids])
    return x, y, ids


def test_train_from_s3(shardstream_bin: Path, minio: MinIO, tmp_path: Path) -> None:
    total = 500
    write_files(tmp_path / "files", total)
    minio.create_bucket("data")
    s3 = ("--s3-endpoint", minio.endpoint, "--s3-path-style")
    if os.environ.get("SHARDSTREAM_TEST_PACK") == "reference":
        pack(shardstream_bin, tmp_path / "files", str(tmp_path / "ds"), shard_size="16KiB")
        minio.put_dir(tmp_path / "ds", "data", "train/v1")
    else:
        pack(
            shardstream_bin,
            tmp_path / "files",
            "s3://data/train/v1",
            shard_size="16KiB",
            env=minio.env(),
            extra=s3,
        )
    with Server(
        shardstream_bin, "s3://data/train/v1", log=tmp_path / "serve.log", extra=s3, env=minio.env()
    ) as srv:
        info = shardstream.ShardStreamDataset(srv.address, batch_size=1).describe()
        assert info.samples == total
        torch.manual_seed(0)
        model = nn.Linear(2, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        seen: list[int] = []
        dropped = -1
        for rank in range(2):
            ds = shardstream.ShardStreamDataset(
                srv.address, rank=rank, world_size=2, batch_size=16, seed=4, decode=features
            )
            for x, y, ids in DataLoader(ds, batch_size=None):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                assert torch.isfinite(loss)
                seen += ids
            assert ds.last_plan is not None
            dropped = ds.last_plan.dropped
    assert len(seen) == len(set(seen)), "a sample arrived twice"
    assert len(seen) + dropped == total
