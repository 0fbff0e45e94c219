"""The demo `make demo` runs: make_dataset, pack, serve, two ranks in DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, pack
from tests.servertest import Server


def test_demo(shardstream_bin: Path, tmp_path: Path) -> None:
    py = sys.executable
    subprocess.run(
        [
            py,
            str(REPO / "examples/make_dataset.py"),
            "--output",
            str(tmp_path / "files"),
            "--samples",
            "1000",
        ],
        check=True,
        timeout=120,
    )
    pack(shardstream_bin, tmp_path / "files", str(tmp_path / "ds"), shard_size="256KiB")
    with Server(shardstream_bin, str(tmp_path / "ds"), log=tmp_path / "serve.log") as srv:
        r = subprocess.run(
            [
                py,
                str(REPO / "examples/demo.py"),
                "--address",
                srv.address,
                "--world-size",
                "2",
                "--epochs",
                "2",
                "--batch-size",
                "24",
                "--dataset-dir",
                str(tmp_path / "ds"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO / "clients" / "python")},
        )
    assert r.returncode == 0, f"demo failed:\n{r.stdout}\n{r.stderr}"
    assert r.stdout.count("exactly once: yes") == 2, r.stdout
    assert "demo: PASS" in r.stdout
