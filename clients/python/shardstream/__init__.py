"""shardstream: a torch IterableDataset fed by the shardstream loader service.

::

    import shardstream
    from torch.utils.data import DataLoader

    ds = shardstream.ShardStreamDataset("127.0.0.1:7070", seed=1, batch_size=32)
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for batch in DataLoader(ds, batch_size=None):
            ...  # a list of {"__key__", "__shard__", "__index__", field: bytes}
        checkpoint["data"] = ds.state_dict()

See docs/python-client.md for DDP, checkpoints, elastic resume and errors.
"""

from shardstream.dataset import (
    Batch,
    DatasetInfo,
    Plan,
    Sample,
    ShardStreamDataset,
    Stats,
    batch_from_proto,
    sample_from_proto,
)
from shardstream.errors import ShardStreamError
from shardstream.world import World, current_worker, current_world, dist_world, resolve_world

__all__ = [
    "Batch",
    "DatasetInfo",
    "Plan",
    "Sample",
    "ShardStreamDataset",
    "ShardStreamError",
    "Stats",
    "World",
    "batch_from_proto",
    "current_worker",
    "current_world",
    "dist_world",
    "resolve_world",
    "sample_from_proto",
]
