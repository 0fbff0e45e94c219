"""What users get from the client: batches, samples, plans and counters.

Plain Python values, no protobuf: :mod:`shardstream._convert` makes them from
the wire messages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
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


# How many of the latest data waits Stats keeps by default.
WAIT_HISTORY = 1024


@dataclass
class Stats:
    """Counters of the iterations run in this process.

    The data wait is the time the training loop spent in ``next()`` for a
    batch: near zero while the loaders keep ahead, the step's length when
    they do not (the figure loader autoscaling follows). ``wait_seconds``,
    ``waits`` and ``last_wait`` cover every batch; ``recent_waits`` holds the
    last ``wait_history`` waits, oldest first. ``on_wait``, when set, is
    called with each wait as the batch is handed over (in the thread of the
    training loop; keep it quick). It is not pickled: a DataLoader worker's
    copy has none.
    """

    batches: int = 0
    samples: int = 0
    # Bytes of field data received (keys and framing not counted).
    bytes: int = 0
    # Streams reopened after a failure (stream_deadline expiries included).
    reconnects: int = 0
    last_error: str = field(default="", repr=False)
    wait_seconds: float = 0.0
    waits: int = 0
    last_wait: float = 0.0
    # The step of the batch last handed to the training loop (counted from
    # the stream's resume token), -1 before any.
    handed_step: int = -1
    wait_history: int = WAIT_HISTORY
    recent_waits: deque[float] = field(init=False, repr=False, compare=False)
    on_wait: Callable[[float], None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.wait_history, bool) or not isinstance(self.wait_history, int):
            raise TypeError(f"wait_history: {self.wait_history!r}, want an int")
        if self.wait_history < 0:
            raise ValueError(f"wait_history: {self.wait_history}, must be >= 0")
        self.recent_waits = deque(maxlen=self.wait_history)

    def record_wait(self, seconds: float) -> None:
        """Counts one batch's data wait and tells ``on_wait``."""
        self.wait_seconds += seconds
        self.waits += 1
        self.last_wait = seconds
        self.recent_waits.append(seconds)
        if self.on_wait is not None:
            self.on_wait(seconds)

    def __getstate__(self) -> dict[str, Any]:
        # The hook belongs to this process (a reporter thread, a closure):
        # a DataLoader worker's copy of the dataset goes without it.
        state = dict(self.__dict__)
        state["on_wait"] = None
        return state
