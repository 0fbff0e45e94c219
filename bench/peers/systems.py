"""Each system's reader, configured as its own docs recommend for training:
shuffled (shard shuffle plus a sample buffer where it has one), batched,
decoded to tensors on its usual path. ``build`` returns the DataLoader to
iterate and, for systems that can resume mid-epoch, how to save and load
their state."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .common import BUCKET, REGION, Workload
from .data import shard_keys

# WebDataset's docs: a sample shuffle buffer of ~1,000 after the shard shuffle.
SHUFFLE_BUFFER = 1000


# DataLoader workers per setup. Peers pinned (one core): the choice of 0 or
# 1 with the lower trainer CPU per GB in a probe of both on the tokens
# workload (docs/benchmarks.md); shared (two cores): 2, one a core.
# shardstream: 0, its server reads and shuffles. (2 for images shared, to
# decode JPEGs on both cores, measured worse: spawned workers (the default
# then) start slowly and two strided streams make the loader read every chunk
# twice. ShardStreamLoader's workers now come from a fork server, which is
# not this process's child: tree_cpu would not count them.)
WORKERS = {
    "pinned": {"webdataset": 0, "s3connector": 0, "streaming": 1, "litdata": 1},
    "shared": {"webdataset": 2, "s3connector": 2, "streaming": 2, "litdata": 2},
}


def workers(setup: str, system: str, workload: str) -> int:
    if system == "shardstream":
        return 0
    return WORKERS[setup][system]


@dataclass
class Reader:
    loader: Iterable[Any]
    # The state to save at a step, or None: the system cannot resume.
    save: Callable[[], Any] | None = None


@dataclass
class Config:
    system: str
    wl: Workload
    endpoint: str  # MinIO
    address: str  # shardstream's coordinator
    seed: int
    workers: int  # DataLoader workers of the peers
    cache_dir: Path  # local cache of the systems that download shards
    resume: Any = None  # a saved state to start from


def _tokens_from_bytes(data: bytes) -> np.ndarray[Any, Any]:
    return np.frombuffer(data, dtype=np.int32)


# ---- shardstream -----------------------------------------------------------


def shardstream(c: Config) -> Reader:
    """The Python client through ShardStreamLoader, one stream per DataLoader
    worker (see ``workers``; the server reads and shuffles). Tokens
    come columnar (one [B, 2048] tensor over the received bytes); images
    as sample dicts decoded by the client's Decoders (PIL) and collated."""
    import shardstream as ss

    columnar = c.wl.name == "tokens"
    ds = ss.ShardStreamDataset(
        c.address,
        seed=c.seed,
        batch_size=c.wl.batch_size,
        columnar=columnar,
        decode=None if columnar else "auto",
        collate=not columnar,
        world_size=1,
        rank=0,
    )
    # ShardStreamLoader keeps state_dict() at the last batch taken, also
    # with workers (each worker streams its own steps).
    loader = ss.ShardStreamLoader(ds, num_workers=c.workers)
    if c.resume is not None:
        loader.load_state_dict(c.resume)

    def items() -> Iterator[Any]:
        for b in loader:
            if columnar:
                yield b["tokens"].data.view(torch.int32)
            else:
                yield b["jpg"], b["cls"]

    return Reader(_Iter(items), save=loader.state_dict)


class _Iter:
    """An iterable over a generator function (iterated once per epoch)."""

    def __init__(self, f: Callable[[], Iterator[Any]]) -> None:
        self.f = f

    def __iter__(self) -> Iterator[Any]:
        return self.f()


# ---- WebDataset -------------------------------------------------------------


def webdataset(c: Config) -> Reader:
    """wds.WebDataset over HTTP (curl, its default for http URLs), shard
    shuffle over all shards, a 1,000-sample shuffle buffer, decoded with
    its "torchrgb8" image decoder (PIL), batched in the workers; WebLoader
    with DataLoader workers, as its docs recommend."""
    import webdataset as wds

    keys = shard_keys(c.endpoint, f"wds/{c.wl.name}", ".tar")
    urls = [f"{c.endpoint}/{BUCKET}/{k}" for k in keys]
    ds = wds.WebDataset(
        urls,
        shardshuffle=len(urls),
        seed=c.seed,
        nodesplitter=wds.single_node_only,
        workersplitter=wds.split_by_worker,
    ).shuffle(SHUFFLE_BUFFER)
    if c.wl.name == "images":
        ds = ds.decode("torchrgb8").to_tuple("jpg", "cls")
    else:
        ds = ds.to_tuple("tokens").map_tuple(_tokens_from_bytes)
    ds = ds.batched(c.wl.batch_size, partial=False)
    return Reader(wds.WebLoader(ds, batch_size=None, num_workers=c.workers))


# ---- the S3 connector for PyTorch --------------------------------------------


class _S3Tars(torch.utils.data.IterableDataset[Any]):
    """S3IterableDataset over the tar shards in a seeded shuffled order
    (split over DataLoader workers by the connector's enable_sharding), the
    stream of each object expanded into samples by WebDataset's tar reader,
    a 1,000-sample shuffle buffer, decoded and batched: the connector's
    documented WebDataset pattern."""

    def __init__(self, c: Config) -> None:
        self.c = c
        keys = shard_keys(c.endpoint, f"wds/{c.wl.name}", ".tar")
        random.Random(c.seed).shuffle(keys)
        self.uris = [f"s3://{BUCKET}/{k}" for k in keys]

    def __iter__(self) -> Iterator[Any]:
        import webdataset as wds
        from s3torchconnector import S3ClientConfig, S3IterableDataset
        from webdataset.tariterators import group_by_keys, tar_file_expander

        objects = S3IterableDataset.from_objects(
            self.uris,
            region=REGION,
            endpoint=self.c.endpoint,
            s3client_config=S3ClientConfig(force_path_style=True),
            enable_sharding=True,
        )
        streams = ({"url": o.key, "stream": o} for o in objects)
        stages: list[Any] = [tar_file_expander, group_by_keys, wds.shuffle(SHUFFLE_BUFFER)]
        if self.c.wl.name == "images":
            stages += [wds.decode("torchrgb8"), wds.to_tuple("jpg", "cls")]
        else:
            stages += [wds.to_tuple("tokens"), wds.map_tuple(_tokens_from_bytes)]
        stages.append(wds.batched(self.c.wl.batch_size, partial=False))
        pipeline: Iterable[Any] = streams
        for stage in stages:
            pipeline = stage(pipeline)
        yield from pipeline


def s3connector(c: Config) -> Reader:
    return Reader(torch.utils.data.DataLoader(_S3Tars(c), batch_size=None, num_workers=c.workers))


# ---- MosaicML Streaming -----------------------------------------------------


def _streaming_dataset(c: Config) -> Any:
    from streaming import StreamingDataset

    class Images(StreamingDataset):
        """The docs' pattern: decode in __getitem__ (PIL image to tensor)."""

        def __getitem__(self, idx: Any) -> Any:
            s = super().__getitem__(idx)
            img = np.asarray(s["jpg"].convert("RGB"))
            return torch.from_numpy(img).permute(2, 0, 1), s["cls"]

    kind = Images if c.wl.name == "images" else StreamingDataset
    return kind(
        remote=f"s3://{BUCKET}/mds/{c.wl.name}",
        local=str(c.cache_dir / "mds"),
        shuffle=True,  # its default algorithm (py1e) and block size
        shuffle_seed=c.seed,
        batch_size=c.wl.batch_size,
        predownload=None,  # its default: 8 batches ahead
    )


def streaming(c: Config) -> Reader:
    """StreamingDataset from S3 with a local shard cache (emptied before
    each run, so every pass downloads), shuffle=True, StreamingDataLoader
    (resumable: state_dict / load_state_dict)."""
    from streaming import StreamingDataLoader
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    ds = _streaming_dataset(c)
    collate = None if c.wl.name == "images" else _tokens_collate
    loader = StreamingDataLoader(
        ds, batch_size=c.wl.batch_size, num_workers=c.workers, drop_last=True, collate_fn=collate
    )
    if c.resume is not None:
        loader.load_state_dict(c.resume)
    return Reader(loader, save=loader.state_dict)


def _tokens_collate(samples: list[dict[str, Any]]) -> torch.Tensor:
    return torch.from_numpy(np.stack([s["tokens"] for s in samples]))


# ---- LitData ----------------------------------------------------------------


def litdata(c: Config) -> Reader:
    """litdata.StreamingDataset from S3 (custom endpoint through
    storage_options), shuffle=True, its cache directory emptied before each
    run; StreamingDataLoader (resumable). Images are decoded by its JPEG
    serializer (torchvision's decode_jpeg when installed, as here)."""
    from litdata import StreamingDataLoader, StreamingDataset
    from litdata.streaming import downloader

    # Its async prefetch (obstore) refuses plain http unless told: the one
    # setting MinIO on loopback needs that S3 over https would not.
    downloader._OBSTORE_CLIENT_OPTIONS = {
        **downloader._OBSTORE_CLIENT_OPTIONS,
        "allow_http": "true",
    }
    ds = StreamingDataset(
        f"s3://{BUCKET}/litdata/{c.wl.name}",
        cache_dir=str(c.cache_dir / "litdata"),
        shuffle=True,
        seed=c.seed,
        drop_last=True,
        storage_options={"endpoint_url": c.endpoint},
    )
    loader = StreamingDataLoader(ds, batch_size=c.wl.batch_size, num_workers=c.workers)
    if c.resume is not None:
        loader.load_state_dict(c.resume)
    return Reader(loader, save=loader.state_dict)


BUILDERS: dict[str, Callable[[Config], Reader]] = {
    "shardstream": shardstream,
    "webdataset": webdataset,
    "s3connector": s3connector,
    "streaming": streaming,
    "litdata": litdata,
}


def tensors(batch: Any) -> list[torch.Tensor]:
    """Every tensor (or array) in a batch, as tensors."""
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, np.ndarray):
        return [torch.from_numpy(batch)]
    if isinstance(batch, dict):
        return [t for v in batch.values() for t in tensors(v)]
    if isinstance(batch, (list, tuple)):
        return [t for v in batch for t in tensors(v)]
    return []


def batch_samples(batch: Any) -> int:
    """The samples in a batch: the first dimension of its first tensor."""
    ts = tensors(batch)
    return int(ts[0].shape[0]) if ts else 0
