"""Fixtures that run the real thing: the shardstream binary, datasets made
with ``shardstream pack``, ``shardstream serve`` processes and MinIO.

The binary comes from ``SHARDSTREAM_BIN`` (``make py-test`` sets it), else it
is built with ``go build`` once per session.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import shardstream
from tests.servertest import MinIO, Server, find_minio, write_reference_dataset

REPO = Path(__file__).resolve().parents[3]


def workers_kw(workers: int) -> dict[str, Any]:
    """DataLoader's ``num_workers`` and, with workers, the fork-server
    context: the test process has made gRPC calls and cannot fork safely."""
    ctx = shardstream.worker_context() if workers else None
    return {"num_workers": workers, "multiprocessing_context": ctx}


@pytest.fixture(scope="session")
def shardstream_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("SHARDSTREAM_BIN")
    if env:
        path = Path(env)
        if not path.is_file():
            pytest.fail(f"SHARDSTREAM_BIN={env}: no such file")
        return path
    go = shutil.which("go")
    if go is None:
        pytest.fail("neither SHARDSTREAM_BIN nor a go toolchain to build the binary with")
    out = tmp_path_factory.mktemp("bin") / "shardstream"
    subprocess.run(
        [go, "build", "-o", str(out), "./cmd/shardstream"], cwd=REPO, check=True, timeout=600
    )
    return out


@dataclass(frozen=True)
class Packed:
    """A dataset made by ``shardstream pack``."""

    path: str  # a directory or s3://bucket/prefix
    samples: int
    shards: int


def sample_files(i: int, size: int) -> dict[str, bytes]:
    """The fields of sample ``i``: ``cls`` is ``i`` in ASCII, ``bin`` is
    ``size`` pseudo-random bytes seeded by ``i`` (so a mixed-up sample is
    noticed, and shards compress little: shard sizes are predictable)."""
    return {"cls": str(i).encode(), "bin": random.Random(i).randbytes(size)}


def write_files(out: Path, samples: int, *, size: int = 200, spread: int = 300) -> None:
    """Writes ``samples`` samples as files ``KEY.cls``, ``KEY.bin``; sample
    i's ``bin`` has ``size + i % spread`` bytes."""
    out.mkdir(parents=True, exist_ok=True)
    for i in range(samples):
        for name, data in sample_files(i, size + i % spread).items():
            (out / f"{i:06d}.{name}").write_bytes(data)


def pack(
    bin_path: Path,
    files: Path,
    output: str,
    *,
    shard_size: str,
    env: dict[str, str] | None = None,
    extra: tuple[str, ...] = (),
) -> None:
    """``shardstream pack`` of the directory ``files`` into ``output``.

    With ``SHARDSTREAM_TEST_PACK=reference`` (and a local output) the Python
    reference writer packs them instead (plain tar, 32 samples a shard), to
    test the client apart from the packer."""
    if os.environ.get("SHARDSTREAM_TEST_PACK") == "reference" and "://" not in output:
        write_reference_dataset(files, Path(output), per_shard=32, per_chunk=8)
        return
    cmd = [str(bin_path), "pack", "--input", str(files), "--output", output]
    cmd += ["--shard-size", shard_size, "--compress", "zstd", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    if r.returncode != 0:
        pytest.fail(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")


def pack_local(
    bin_path: Path,
    root: Path,
    samples: int,
    *,
    shard_size: str,
    chunk_size: str = "8MiB",
    size: int = 200,
    spread: int = 300,
) -> Packed:
    """Writes ``samples`` samples as files and packs them into ``root/dataset``."""
    files, out = root / "files", root / "dataset"
    write_files(files, samples, size=size, spread=spread)
    pack(bin_path, files, str(out), shard_size=shard_size, extra=("--chunk-size", chunk_size))
    manifest = json.loads((out / "manifest.json").read_text())
    n = sum(int(s["samples"]) for s in manifest["shards"])
    assert n == samples, f"pack wrote {n} samples into the manifest, want {samples}"
    return Packed(path=str(out), samples=n, shards=len(manifest["shards"]))


# SAMPLES is not a multiple of the batch sizes the tests use with 2 or 3
# ranks, so the drop and pad policies have work to do.
SAMPLES = 1003


@pytest.fixture(scope="session")
def dataset(shardstream_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Packed:
    """~1000 small samples in a few dozen zstd shards."""
    return pack_local(shardstream_bin, tmp_path_factory.mktemp("ds"), SAMPLES, shard_size="16KiB")


@pytest.fixture(scope="session")
def server(
    shardstream_bin: Path, dataset: Packed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """``shardstream serve`` over :func:`dataset`, shared by the session."""
    s = Server(shardstream_bin, dataset.path, log=tmp_path_factory.mktemp("log") / "serve.log")
    s.start()
    yield s
    s.stop()


@pytest.fixture
def minio(tmp_path: Path) -> Iterator[MinIO]:
    """A MinIO server on loopback for one test (skipped without a MinIO
    binary, failed under CI=true)."""
    path = find_minio()
    if path is None:
        msg = "no MinIO: set SHARDSTREAM_MINIO, put minio on PATH or in $(go env GOPATH)/bin"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + " (CI=true: the S3 test must run)")
        pytest.skip(msg)
    m = MinIO(path, tmp_path / "minio")
    (tmp_path / "minio").mkdir()
    m.start()
    yield m
    m.stop()
