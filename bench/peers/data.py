"""One logical dataset per workload, written in each system's native format
from the same samples, into one MinIO bucket:

- ``wds/<workload>/``: WebDataset tar shards + manifest.json, written by
  ``shardstream pack --compress none`` (read by shardstream, WebDataset and
  the S3 connector);
- ``mds/<workload>/``: MosaicML Streaming's MDS (``MDSWriter``);
- ``litdata/<workload>/``: LitData's optimized chunks (``litdata.optimize``).

The sample files are generated once under the work directory and kept; the
formats are rewritten into each fresh MinIO.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from .common import BUCKET, IMAGE_SIZE, TOKENS, WORKLOADS, Workload

# Distinct pictures generated; sample i uses picture i % PICTURES (each is
# still decoded per sample: the readers cannot tell).
PICTURES = 64


def sample_files(work: Path, wl: Workload) -> Path:
    """The workload's samples as files KEY.jpg + KEY.cls or KEY.tokens."""
    files = work / "files" / f"{wl.name}-{wl.samples}"
    done = files / ".done"
    if done.exists():
        return files
    files.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(14)
    if wl.name == "images":
        from PIL import Image

        s = IMAGE_SIZE
        y, x = np.mgrid[0:s, 0:s]
        pictures = []
        for p in range(PICTURES):
            base = np.stack([x * 255 // s, y * 255 // s, (x + y + p * 7) * 127 // s], -1)
            noise = rng.integers(-60, 60, (s, s, 3))
            img = np.clip(base + noise, 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, "JPEG", quality=90)
            pictures.append(buf.getvalue())
        for i in range(wl.samples):
            (files / f"{i:08d}.jpg").write_bytes(pictures[i % PICTURES])
            (files / f"{i:08d}.cls").write_bytes(str(i % 1000).encode())
    else:
        block = rng.integers(0, 50_000, TOKENS * 2, dtype=np.int32)
        for i in range(wl.samples):
            off = i % TOKENS
            (files / f"{i:08d}.tokens").write_bytes(block[off : off + TOKENS].tobytes())
    done.touch()
    return files


def keys(files: Path) -> list[str]:
    return sorted({p.name.split(".", 1)[0] for p in files.iterdir() if not p.name.startswith(".")})


def write_mds(files: Path, wl: Workload, out: Path) -> None:
    from PIL import Image
    from streaming import MDSWriter

    if wl.name == "images":
        columns = {"jpg": "jpeg", "cls": "int"}
    else:
        columns = {"tokens": f"ndarray:int32:{TOKENS}"}
    with MDSWriter(out=str(out), columns=columns, size_limit=wl.shard_bytes) as w:
        for k in keys(files):
            if wl.name == "images":
                # An opened JPEG file is stored as its bytes, not re-encoded.
                img = Image.open(files / f"{k}.jpg")
                w.write({"jpg": img, "cls": int((files / f"{k}.cls").read_bytes())})
            else:
                tokens = np.frombuffer((files / f"{k}.tokens").read_bytes(), dtype=np.int32)
                w.write({"tokens": tokens})


def _litdata_item(item: tuple[str, str, str]) -> dict[str, Any]:
    """One sample for litdata.optimize (module-level: it is pickled)."""
    from PIL import Image

    files, key, workload = item
    if workload == "images":
        # An opened JPEG file is stored as its bytes (JPEGSerializer).
        cls = int(Path(files, f"{key}.cls").read_bytes())
        return {"jpg": Image.open(Path(files, f"{key}.jpg")), "cls": cls}
    data = Path(files, f"{key}.tokens").read_bytes()
    return {"tokens": np.frombuffer(data, dtype=np.int32)}


def write_litdata(files: Path, wl: Workload, out: Path) -> None:
    from litdata import optimize

    inputs = [(str(files), k, wl.name) for k in keys(files)]
    optimize(
        fn=_litdata_item,
        inputs=inputs,
        output_dir=str(out),
        chunk_bytes=wl.shard_bytes,
        num_workers=1,
        mode="overwrite",
    )


def upload(client: Any, local: Path, prefix: str) -> int:
    """Uploads a directory tree to s3://BUCKET/prefix/; returns its bytes."""
    total = 0
    for p in sorted(local.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            client.upload_file(str(p), BUCKET, f"{prefix}/{p.relative_to(local)}")
            total += p.stat().st_size
    return total


def write_all(work: Path, shardstream_bin: Path, endpoint: str, env: dict[str, str]) -> None:
    """Every workload in every format into the (empty) bucket."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    # Anonymous reads: WebDataset fetches shards with curl over plain HTTP.
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": ["*"]},
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{BUCKET}/*"],
            }
        ],
    }
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))
    for wl in WORKLOADS.values():
        files = sample_files(work, wl)
        subprocess.run(
            [
                str(shardstream_bin),
                "pack",
                "--input",
                str(files),
                "--output",
                f"s3://{BUCKET}/wds/{wl.name}",
                "--compress",
                "none",
                "--shard-size",
                str(wl.shard_bytes),
                "--s3-endpoint",
                endpoint,
                "--s3-path-style",
            ],
            check=True,
            env=env,
        )
        for fmt, writer in (("mds", write_mds), ("litdata", write_litdata)):
            local = work / fmt / f"{wl.name}-{wl.samples}"
            if not (local / ".done").exists():
                writer(files, wl, local)
                (local / ".done").touch()
            upload(s3, local, f"{fmt}/{wl.name}")


def shard_keys(endpoint: str, prefix: str, suffix: str) -> list[str]:
    """The keys under s3://BUCKET/prefix/ that end with suffix, sorted."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint)
    out: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        out += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(suffix)]
    return sorted(out)
