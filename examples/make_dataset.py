"""Writes a small classification dataset as a directory of files.

Each sample KEY has two files, the WebDataset way:

    000123.input.npy   float32 feature vector (numpy .npy)
    000123.cls         its class, as ASCII digits

Features are drawn around one centroid per class, so a linear classifier
learns them in a few steps. The output is a pure function of the arguments.

    python examples/make_dataset.py --output /tmp/files --samples 4096
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np


def write_dataset(out: Path, *, samples: int, dim: int, classes: int, seed: int) -> None:
    """Writes ``samples`` samples of ``dim`` features in ``classes`` classes to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centroids = rng.normal(0.0, 2.0, size=(classes, dim)).astype(np.float32)
    labels = rng.integers(0, classes, size=samples)
    noise = rng.normal(0.0, 1.0, size=(samples, dim)).astype(np.float32)
    width = max(6, len(str(samples - 1)))
    for i in range(samples):
        key = f"{i:0{width}d}"
        buf = io.BytesIO()
        np.save(buf, centroids[labels[i]] + noise[i], allow_pickle=False)
        (out / f"{key}.input.npy").write_bytes(buf.getvalue())
        (out / f"{key}.cls").write_text(str(int(labels[i])))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--output", type=Path, required=True, help="directory to write")
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--dim", type=int, default=64, help="features per sample")
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.samples < 1 or a.dim < 1 or a.classes < 2:
        p.error("--samples and --dim must be positive, --classes at least 2")
    write_dataset(a.output, samples=a.samples, dim=a.dim, classes=a.classes, seed=a.seed)
    print(f"wrote {a.samples} samples ({a.dim} features, {a.classes} classes) to {a.output}")


if __name__ == "__main__":
    main()
