"""What users get from the client: batches, samples, plans and counters.

Plain Python values, no protobuf: :mod:`shardstream._convert` makes them from
the wire messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Batch", "DatasetInfo", "Plan", "Sample", "Stats"]

Sample = dict[str, Any]
"""One sample: ``__key__`` (str), ``__shard__`` and ``__index__`` (int: its
identity in the dataset) and one ``bytes`` value per field, by field name."""


class Batch(list[Sample]):
    """One step's samples for one rank, in the order the loader sent them.

    ``resume_token`` is the token to checkpoint once every rank has consumed
    this step; ``step`` counts from the point the iteration started at (the
    resume token's point, or the start of the epoch).
    """

    def __init__(
        self, samples: list[Sample], *, rank: int, epoch: int, step: int, resume_token: str
    ) -> None:
        super().__init__(samples)
        self.rank = rank
        self.epoch = epoch
        self.step = step
        self.resume_token = resume_token

    def __repr__(self) -> str:
        return f"Batch(rank={self.rank}, epoch={self.epoch}, step={self.step}, samples={len(self)})"


@dataclass(frozen=True)
class Plan:
    """What the coordinator planned for one rank (from PlanEpoch)."""

    fingerprint: str
    steps: int
    samples: int
    dropped: int
    padded: int
    resume_token: str
    loader_addresses: tuple[str, ...]
    window: int = 0  # the window the plan used (0: a server too old to say)
    # Each rank's stripe loaders (PlanEpochResponse.rank_loaders), indexed
    # by rank: K addresses, the first being loader_addresses[rank]; empty
    # from a server too old to say.
    rank_loaders: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class DatasetInfo:
    """A served dataset (from GetDataset)."""

    name: str
    fingerprint: str
    shards: int
    samples: int
    bytes: int


@dataclass
class Stats:
    """Counters of the iterations run in this process."""

    batches: int = 0
    samples: int = 0
    # Bytes of field data received (keys and framing not counted).
    bytes: int = 0
    # Streams reopened after a failure.
    reconnects: int = 0
    last_error: str = field(default="", repr=False)
