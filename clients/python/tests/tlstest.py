"""Certificates for tests, made with the openssl command-line tool (the
client has no crypto dependency of its own, and the test image has openssl).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CA:
    """A CA's certificate and key, and where it writes what it signs."""

    cert: Path
    key: Path
    dir: Path


def _openssl(*args: str) -> None:
    exe = shutil.which("openssl") or "/usr/bin/openssl"
    r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: exit {r.returncode}\n{r.stderr}")


def make_ca(out: Path, name: str) -> CA:
    """A self-signed P-256 CA valid for a day."""
    out.mkdir(parents=True, exist_ok=True)
    cert, key = out / f"{name}.crt", out / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
        "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return CA(cert=cert, key=key, dir=out)


def issue(ca: CA, name: str, *, server: bool) -> tuple[Path, Path]:
    """A leaf certificate and key signed by ``ca``: for 127.0.0.1 and
    localhost (``server``), or a client's."""
    cert, key, csr = (ca.dir / f"{name}.{x}" for x in ("crt", "key", "csr"))
    ext = ca.dir / f"{name}.ext"
    lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature"]
    if server:
        lines += ["extendedKeyUsage=serverAuth", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    else:
        lines += ["extendedKeyUsage=clientAuth"]
    ext.write_text("\n".join(lines) + "\n")
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-set_serial", str(secrets.randbits(62) + 1), "-days", "1",
        "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    return cert, key
