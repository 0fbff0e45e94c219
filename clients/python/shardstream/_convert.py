"""Wire messages (shardstream.v1) to and from the client's Python values."""

from __future__ import annotations

from collections.abc import Mapping

from shardstream.types import Batch, DatasetInfo, Plan, Sample
from shardstream.v1 import shardstream_pb2 as pb

__all__ = [
    "LAST_BATCH_POLICIES",
    "batch_from_proto",
    "dataset_info_from_proto",
    "field_bytes",
    "job_spec",
    "plan_from_proto",
    "sample_from_proto",
]

LAST_BATCH_POLICIES: Mapping[str, pb.LastBatchPolicy] = {
    "drop": pb.LAST_BATCH_POLICY_DROP,
    "pad": pb.LAST_BATCH_POLICY_PAD,
}
"""The dataset's ``last_batch`` values and what they are on the wire."""


def job_spec(
    *,
    dataset: str,
    seed: int,
    epoch: int,
    world_size: int,
    batch_size: int,
    window: int,
    last_batch: str,
    resume_token: str,
) -> pb.JobSpec:
    """The JobSpec of a job; ``last_batch`` is a key of LAST_BATCH_POLICIES."""
    return pb.JobSpec(
        dataset=dataset,
        seed=seed,
        epoch=epoch,
        world_size=world_size,
        batch_size=batch_size,
        window=window,
        last_batch=LAST_BATCH_POLICIES[last_batch],
        resume_token=resume_token,
    )


def sample_from_proto(s: pb.Sample) -> Sample:
    """Turns a wire Sample into the dict the dataset yields."""
    d: Sample = {"__key__": s.key, "__shard__": s.shard, "__index__": s.index}
    for f in s.fields:
        d[f.name] = f.data
    return d


def batch_from_proto(b: pb.Batch) -> Batch:
    """Turns a wire Batch into a :class:`Batch` of sample dicts."""
    return Batch(
        [sample_from_proto(s) for s in b.samples],
        rank=b.rank,
        epoch=b.epoch,
        step=b.step,
        resume_token=b.resume_token,
    )


def field_bytes(b: pb.Batch) -> int:
    """Bytes of field data in a wire Batch (keys and framing not counted)."""
    return sum(len(f.data) for s in b.samples for f in s.fields)


def plan_from_proto(r: pb.PlanEpochResponse) -> Plan:
    return Plan(
        fingerprint=r.dataset_fingerprint,
        steps=r.steps,
        samples=r.samples,
        dropped=r.dropped,
        padded=r.padded,
        resume_token=r.resume_token,
        loader_addresses=tuple(r.loader_addresses),
        window=r.window,
        rank_loaders=tuple(tuple(r.addresses) for r in r.rank_loaders),
    )


def dataset_info_from_proto(r: pb.GetDatasetResponse) -> DatasetInfo:
    return DatasetInfo(
        name=r.name,
        fingerprint=r.fingerprint,
        shards=r.shards,
        samples=r.samples,
        bytes=r.bytes,
    )
