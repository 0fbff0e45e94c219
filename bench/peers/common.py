"""What every part of the peer benchmark shares: the workloads, the store's
names and credentials, and the measurements of the trainer process."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import threading
from dataclasses import dataclass
from typing import Any

BUCKET = "bench"
ACCESS_KEY = "shardstreamtest"  # the credentials of servertest.MinIO
SECRET_KEY = "shardstreamtest-secret"
REGION = "us-east-1"

SYSTEMS = ("shardstream", "webdataset", "s3connector", "streaming", "litdata")
PEERS = SYSTEMS[1:]


@dataclass(frozen=True)
class Workload:
    name: str
    samples: int
    batch_size: int
    shard_bytes: int  # each format's shard/chunk size limit


# Images: ~110 KB JPEGs (416x416, PIL quality 90) + a label, decoded to
# uint8 [3, 416, 416] tensors. Tokens: 2,048 int32 tokens (8 KiB) a sample.
WORKLOADS = {
    "images": Workload("images", 1_000, 32, 16 << 20),
    "tokens": Workload("tokens", 24_000, 64, 16 << 20),
}
TOKENS = 2048
IMAGE_SIZE = 416


def store_env(endpoint: str) -> dict[str, str]:
    """The environment every S3 client of the benchmark reads its endpoint
    and credentials from (boto3, the AWS CRT, MosaicML Streaming)."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "S3_ENDPOINT_URL": endpoint,  # MosaicML Streaming's endpoint setting
    }


@dataclass
class Result:
    """One timed epoch of one system on one workload, measured inside the
    trainer process (its DataLoader workers and their children included)."""

    system: str
    workload: str
    setup: str  # "pinned" or "shared"
    rep: int
    samples: int = 0
    batches: int = 0
    stored_bytes: int = 0  # encoded sample bytes delivered (the dataset's bytes)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    first_batch_s: float = 0.0
    peak_rss: int = 0
    resume_s: float | None = None  # None: the system cannot resume mid-epoch
    fetched_bytes: int | None = None  # bytes the loader read from the store (shardstream)
    shard_bytes: int | None = None  # the bytes of the shards it read them from
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def tree_cpu() -> float:
    """CPU seconds of this process and its reaped children (DataLoader
    workers, and what they started: curl for WebDataset)."""
    t = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        t += ru.ru_utime + ru.ru_stime
    return t


class PeakRSS:
    """Samples the resident memory of this process and its descendants
    (summed; shared pages count in every process) until stopped."""

    def __init__(self, interval: float = 0.25) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True, name="peak-rss")

    def _sample(self) -> None:
        import psutil  # of .bench-venv only: the report's test runs without it

        me = psutil.Process(os.getpid())
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # it ended since the listing
                total += child.memory_info().rss
        self.peak = max(self.peak, total)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> PeakRSS:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
