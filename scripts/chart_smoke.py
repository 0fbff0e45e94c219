"""Run the chart's rendered coordinator and loader commands with the real binary.

    chart_smoke.py --binary bin/shardstream RENDERED.yaml

Takes the args of the rendered RELEASE-shardstream-coordinator and -loader
Deployments (or StatefulSet) as they are, changing only what ties them to a cluster: --data
(a small dataset packed here), --listen and --metrics-addr (loopback ports),
--cache-dir, the coordinator's address and --advertise, and the Secrets'
mount point /etc/shardstream, under which it writes what the args name: a
CA and a certificate for 127.0.0.1 (openssl), an auth file allowing the
loader token, the token, an HMAC key. Then: the loader must join the
coordinator's pool (`shardstream status`), show as draining after SIGTERM,
and both must exit 0 within their pods' grace periods.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

DEADLINE = 60.0  # seconds for each step: generous, the machine may be loaded


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pod_spec(docs: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    for d in docs:
        workload = d.get("kind") in ("Deployment", "StatefulSet")
        if workload and d["metadata"]["name"].endswith(suffix):
            spec: dict[str, Any] = d["spec"]["template"]["spec"]
            return spec
    raise SystemExit(f"no Deployment or StatefulSet *{suffix} rendered")


SECRETS = "/etc/shardstream/"


def local_args(args: list[str], replace: dict[str, str], secrets: Path) -> list[str]:
    """args with the cluster-bound flags replaced (those in replace) and the
    Secrets' mount point moved to secrets."""
    out = []
    for a in args:
        name = a.split("=", 1)[0]
        a = f"{name}={replace[name]}" if name in replace else a
        out.append(a.replace(SECRETS, f"{secrets}/"))
    return out


def openssl(args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args.split()], cwd=cwd, check=True, capture_output=True)


def write_secrets(args: list[str], secrets: Path) -> dict[str, Path]:
    """Write the files args read under secrets, by their Secret's mount (tls,
    client-ca, server-ca, auth, loader-token, token-key); returns the CA,
    certificate, key and token paths for `shardstream status`."""
    pki = secrets / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1"
    openssl(
        f"req -x509 {ec} -keyout ca.key -out ca.crt -subj /CN=chart-smoke-ca"
        " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign",
        cwd=pki,
    )
    openssl(f"req {ec} -keyout tls.key -out tls.csr -subj /CN=127.0.0.1", cwd=pki)
    (pki / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    openssl(
        "x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out tls.crt"
        " -days 1 -extfile ext.cnf",
        cwd=pki,
    )
    token = os.urandom(32).hex()
    (pki / "token").write_text(token + "\n")
    digest = hashlib.sha256(token.encode()).hexdigest()
    (pki / "auth.txt").write_text(f"loaders {digest} *\n")
    (pki / "token.key").write_text(os.urandom(32).hex() + "\n")
    # The pki file each Secret's mount holds (tls holds tls.crt and tls.key).
    content = {
        "client-ca": "ca.crt",
        "server-ca": "ca.crt",
        "auth": "auth.txt",
        "loader-token": "token",
        "token-key": "token.key",
    }
    for a in args:
        _, _, path = a.partition("=")
        if not path.startswith(f"{secrets}/"):
            continue
        f = Path(path)
        mount = f.parent.name
        src = f.name if mount == "tls" else content.get(mount)
        if src is None or not (pki / src).exists():
            raise SystemExit(f"{a}: no test content for the {mount} Secret's {f.name}")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes((pki / src).read_bytes())
    return {n: pki / n for n in ("ca.crt", "tls.crt", "tls.key", "token")}


def start(binary: str, args: list[str], log: Path) -> subprocess.Popen[str]:
    """Start binary with args and wait for its one "listening on" line."""
    with log.open("w") as errf:  # the child keeps its own copy of the descriptor
        p = subprocess.Popen([binary, *args], stdout=subprocess.PIPE, stderr=errf, text=True)
    line: list[str] = []
    t = threading.Thread(target=lambda: line.append(p.stdout.readline() if p.stdout else ""))
    t.start()
    t.join(DEADLINE)
    if not line or not line[0].startswith("listening on"):
        p.kill()
        raise SystemExit(f"{args[0]} did not start: {line}\n{log.read_text()}")
    return p


def poll(what: str, cond: Callable[[], bool], log: Path) -> None:
    end = time.monotonic() + DEADLINE
    while not cond():
        if time.monotonic() > end:
            tail = "\n".join(log.read_text().splitlines()[-10:])
            raise SystemExit(f"timed out waiting for {what}; {log.name} ends:\n{tail}")
        time.sleep(0.2)


def pool(binary: str, coord: str, creds: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        [binary, "status", "--coordinator", coord, "--json", *creds],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return {"loaders": []}
    status: dict[str, Any] = json.loads(out.stdout)
    return status


def stop(name: str, p: subprocess.Popen[str], grace: int, log: Path) -> float:
    """SIGTERM p; it must exit 0 within grace seconds. Returns how long it took."""
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(grace)
    except subprocess.TimeoutExpired:
        p.kill()
        raise SystemExit(
            f"{name} still running {grace}s after SIGTERM\n{log.read_text()}"
        ) from None
    if rc != 0:
        raise SystemExit(f"{name} exited {rc} after SIGTERM\n{log.read_text()}")
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("rendered")
    a = ap.parse_args()
    docs = [d for d in yaml.safe_load_all(Path(a.rendered).read_text()) if d]
    cspec, lspec = pod_spec(docs, "-coordinator"), pod_spec(docs, "-loader")
    with tempfile.TemporaryDirectory(prefix="chart-smoke-") as tmp:
        work = Path(tmp)
        files = work / "files"
        files.mkdir()
        for i in range(64):
            (files / f"s{i:03d}.txt").write_text(f"sample {i}\n" * 50)
            (files / f"s{i:03d}.cls").write_text(str(i % 10))
        subprocess.run(
            [a.binary, "pack", "--input", str(files), "--output", str(work / "ds")],
            check=True,
            capture_output=True,
        )
        cport, lport = free_port(), free_port()
        coord = f"127.0.0.1:{cport}"
        common = {
            "--data": str(work / "ds"),
            "--metrics-addr": "127.0.0.1:0",
            "--cache-dir": str(work / "cache"),
        }
        secrets = work / "etc"
        cargs = local_args(cspec["containers"][0]["args"], {**common, "--listen": coord}, secrets)
        largs = local_args(
            lspec["containers"][0]["args"],
            {
                **common,
                "--listen": f"127.0.0.1:{lport}",
                "--coordinator": coord,
                "--advertise": f"127.0.0.1:{lport}",
            },
            secrets,
        )
        pki = write_secrets(cargs + largs, secrets)
        creds = []
        if any(x.startswith("--tls-cert=") for x in cargs):
            creds = ["--coordinator-ca", str(pki["ca.crt"])]
            creds += ["--client-cert", str(pki["tls.crt"]), "--client-key", str(pki["tls.key"])]
        if any(x.startswith("--auth-file=") for x in cargs):
            creds += ["--token-file", str(pki["token"])]
        clog, llog = work / "coordinator.log", work / "loader.log"
        cp = start(a.binary, cargs, clog)
        try:
            lp = start(a.binary, largs, llog)
            try:
                want = f"127.0.0.1:{lport}"

                def state() -> str:
                    found = [
                        x for x in pool(a.binary, coord, creds)["loaders"] if x["address"] == want
                    ]
                    return str(found[0]["state"]) if found else ""

                poll("the loader to join the pool", lambda: state() == "serving", llog)
                print(f"loader {want} joined the coordinator's pool")
                lp.send_signal(signal.SIGTERM)
                poll("the loader to drain", lambda: state() in ("draining", ""), llog)
                took = stop("loader", lp, int(lspec["terminationGracePeriodSeconds"]), llog)
                print(f"loader drained and exited 0 in {took:.1f}s after SIGTERM")
            finally:
                if lp.poll() is None:
                    lp.kill()
        finally:
            if cp.poll() is None:
                stop("coordinator", cp, int(cspec["terminationGracePeriodSeconds"]), clog)
        print("coordinator exited 0 after SIGTERM")
    return 0


if __name__ == "__main__":
    sys.exit(main())
