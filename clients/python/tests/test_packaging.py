"""The client's wheel and sdist, built as ``make wheel`` builds them: what
they hold, their metadata, and the wheel installed into a throwaway venv
reading an epoch from the real server."""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import grpc
import numpy
import pytest
import torch
from google import protobuf

from tests.servertest import Server

# tomllib is 3.11's; mypy checks this file as 3.10 (the oldest supported).
tomllib = pytest.importorskip("tomllib")

CLIENT = Path(__file__).resolve().parents[1]  # clients/python
PYPROJECT = tomllib.loads((CLIENT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build --no-isolation`` of a copy of the client's sources
    (so the build leaves nothing in the work tree)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy(CLIENT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(CLIENT / "shardstream", src / "shardstream", ignore=ignore)
    shutil.copytree(CLIENT / "tests", src / "tests", ignore=ignore)  # must stay out
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def sources() -> set[str]:
    """The package's files in the work tree, as paths in the wheel."""
    return {
        p.relative_to(CLIENT).as_posix()
        for p in (CLIENT / "shardstream").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_wheel_files(dist: Path) -> None:
    whl = dist / f"shardstream-{VERSION}-py3-none-any.whl"
    assert whl.is_file(), sorted(os.listdir(dist))
    names = set(zipfile.ZipFile(whl).namelist())
    package = {n for n in names if not n.startswith(f"shardstream-{VERSION}.dist-info/")}
    assert package == sources(), "the wheel's package differs from shardstream/"
    for want in (
        "shardstream/py.typed",
        "shardstream/v1/shardstream_pb2.py",
        "shardstream/v1/shardstream_pb2.pyi",
        "shardstream/v1/shardstream_pb2_grpc.py",
    ):
        assert want in names
    assert not [n for n in names if n.startswith("tests/") or "conftest" in n]


def test_wheel_metadata(dist: Path) -> None:
    whl = dist / f"shardstream-{VERSION}-py3-none-any.whl"
    raw = zipfile.ZipFile(whl).read(f"shardstream-{VERSION}.dist-info/METADATA").decode()
    meta = email.parser.Parser().parsestr(raw)
    assert meta["Name"] == "shardstream"
    assert meta["Requires-Python"] == PYPROJECT["project"]["requires-python"]
    requires = meta.get_all("Requires-Dist") or []
    runtime = [r for r in requires if "extra ==" not in r]
    assert runtime == PYPROJECT["project"]["dependencies"]
    assert {r.split(">=")[0] for r in runtime} == {"grpcio", "protobuf", "numpy", "torch"}
    assert meta.get_all("Provides-Extra") == ["image"]
    assert 'Pillow>=10; extra == "image"' in requires


def test_sdist_files(dist: Path) -> None:
    sdist = dist / f"shardstream-{VERSION}.tar.gz"
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert sources() <= names
    assert "pyproject.toml" in names
    assert not [n for n in names if n.startswith("tests/")]


INSTALLED_SCRIPT = """
import sys
import shardstream
import shardstream.v1.shardstream_pb2_grpc

ds = shardstream.ShardStreamDataset(sys.argv[1], batch_size=16, rank=0, world_size=1)
print(shardstream.__file__)
print(sum(len(b) for b in ds))
"""


def test_wheel_installs_and_reads(dist: Path, server: Server, tmp_path: Path) -> None:
    # A venv of its own, without pip and without the shared venv's
    # packages; the dependencies (torch is GBs) come from the directories
    # this interpreter imports them from, listed in a .pth file (a plain
    # path: the .pth files there, such as the work tree's editable
    # install, are not run).
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deps = {
        str(Path(m.__file__).resolve().parents[n])
        for m, n in ((grpc, 1), (protobuf, 2), (numpy, 1), (torch, 1))
        if m.__file__
    }
    Path(site, "deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    whl = dist / f"shardstream-{VERSION}-py3-none-any.whl"
    # --target: into the venv's site-packages, whatever the shared venv
    # (on the .pth's path) already has installed.
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    r = subprocess.run(
        [*pip, "--target", site, str(whl)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr

    script = tmp_path / "read.py"
    script.write_text(textwrap.dedent(INSTALLED_SCRIPT))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(
        [str(python), str(script), server.address],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    where, samples = r.stdout.split()
    assert Path(where).resolve().is_relative_to(Path(site).resolve()), (
        f"imported {where}, not the installed wheel"
    )
    assert int(samples) > 0
