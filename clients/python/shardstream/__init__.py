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

from shardstream._columnar import Column, ColumnarBatch

# batch_from_proto and sample_from_proto are wire conversion, internal now
# (shardstream._convert); they stay importable from here for code written
# before the split, but are not in the public list.
from shardstream._convert import batch_from_proto as batch_from_proto
from shardstream._convert import sample_from_proto as sample_from_proto
from shardstream._fork import worker_context
from shardstream._state import resume_state
from shardstream.dataset import ShardStreamDataset
from shardstream.decoders import RAW_DTYPES, DecodeError, Decoders, collate
from shardstream.errors import ShardStreamError
from shardstream.loader import ShardStreamLoader
from shardstream.types import Batch, DatasetInfo, Plan, Sample, Stats
from shardstream.world import World, current_worker, current_world, dist_world, resolve_world

__all__ = [
    "RAW_DTYPES",
    "Batch",
    "Column",
    "ColumnarBatch",
    "DatasetInfo",
    "DecodeError",
    "Decoders",
    "Plan",
    "Sample",
    "ShardStreamDataset",
    "ShardStreamError",
    "ShardStreamLoader",
    "Stats",
    "World",
    "collate",
    "current_worker",
    "current_world",
    "dist_world",
    "resolve_world",
    "resume_state",
    "worker_context",
]
