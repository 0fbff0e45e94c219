"""Running ``shardstream serve`` (and MinIO) as child processes in tests.

Readiness is what the processes say, never a sleep: ``serve`` prints
``listening on HOST:PORT`` once it accepts connections, and a GetDataset call
(waiting for the channel to be ready) confirms it answers.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

import shardstream

START_TIMEOUT = 60.0


class Server:
    """One ``shardstream serve`` process; restartable on the same port."""

    def __init__(
        self,
        bin_path: Path,
        data: str,
        *,
        log: Path,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        client: dict[str, Any] | None = None,
        role: str = "serve",
    ) -> None:
        """``client``: ShardStreamDataset arguments for the readiness call
        (TLS and token for a secured server). ``role``: the subcommand,
        ``serve``, ``coordinator`` or ``loader`` (give a loader
        ``--coordinator ADDR`` in ``extra``)."""
        self.bin_path = bin_path
        self.role = role
        self.client = client or {}
        self.data = data
        self.log_path = log
        self.extra = extra
        self.env = env
        self.port = 0
        self.address = ""
        self.proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None

    def start(self) -> None:
        """Starts the server (on the port it had before, if any) and returns
        once it answers."""
        assert self.proc is None, "server already running"
        self._log = self.log_path.open("a")
        cmd = [str(self.bin_path), self.role, "--data", self.data]
        cmd += ["--listen", f"127.0.0.1:{self.port}", *self.extra]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=self.env,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        stdout = self.proc.stdout
        assert stdout is not None

        def drain() -> None:  # owned by the process: ends when its stdout closes
            for line in stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=drain, daemon=True, name="serve-stdout").start()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise RuntimeError(
                    f"{cmd}: no 'listening on' in {START_TIMEOUT}s:\n{self.log()}"
                ) from None
            if line is None:
                code = self.proc.wait()
                self.proc = None
                raise RuntimeError(f"{cmd}: exited with {code} before serving:\n{self.log()}")
            if line.startswith("listening on "):
                self.address = line.removeprefix("listening on ").strip()
                self.port = int(self.address.rsplit(":", 1)[1])
                break
        # Health: a real RPC answered.
        kw: dict[str, Any] = {"timeout": 10, **self.client}
        shardstream.ShardStreamDataset(self.address, batch_size=1, **kw).describe()

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError as e:
            return f"(no log: {e})"

    def _end(self, sig: int) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(sig)
        return self.wait()

    def terminate(self) -> None:
        """Sends SIGTERM and returns at once, while the server drains; :meth:`wait`
        gives its exit code. (Only one SIGTERM: a second one ends a Go
        program whose signal context was already cancelled at once.)"""
        assert self.proc is not None, "server not running"
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30) -> int:
        """Waits for the process to exit (SIGKILL after ``timeout`` seconds)
        and returns its exit code."""
        if self.proc is None:
            return 0
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def stop(self) -> int:
        """Graceful stop (SIGTERM); returns the exit code."""
        return self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Kills the process with SIGKILL: no goodbye to open streams."""
        self._end(signal.SIGKILL)

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proxy:
    """A TCP proxy on loopback in front of ``target`` (``host:port``) whose
    forwarding can be paused or slowed: a real connection to a real server
    that goes silent (paused: the sockets stay open, nothing is forwarded,
    nothing read, so TCP holds the sender back) or trickles (``rate`` bytes
    per second each way)."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._flow = threading.Condition()
        self._paused = False
        self.rate: float | None = None  # bytes per second each way; None: as fast as it comes
        self._socks: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def pause(self) -> None:
        with self._flow:
            self._paused = True

    def resume(self) -> None:
        with self._flow:
            self._paused = False
            self._flow.notify_all()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._flow:
                if self._closed:
                    client.close()
                    server.close()
                    return
                self._socks += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(4096)
                if not data:
                    break
                with self._flow:
                    while self._paused and not self._closed:
                        self._flow.wait()
                    rate = self.rate
                if rate:
                    # The trickle itself: this connection's bandwidth.
                    time.sleep(len(data) / rate)
                dst.sendall(data)
        except OSError:
            pass  # a side closed: the connection is over
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._flow:
            self._closed = True
            self._flow.notify_all()
            socks, self._socks = self._socks, []
        self._listener.close()
        for s in socks:
            s.close()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def find_minio() -> str | None:
    """The MinIO binary: $SHARDSTREAM_MINIO, else minio on PATH, else
    $(go env GOPATH)/bin/minio."""
    env = os.environ.get("SHARDSTREAM_MINIO")
    if env:
        return env if Path(env).is_file() else None
    found = shutil.which("minio")
    if found:
        return found
    gopath = os.environ.get("GOPATH") or str(Path.home() / "go")
    if shutil.which("go"):
        r = subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True, check=False)
        if r.returncode == 0 and r.stdout.strip():
            gopath = r.stdout.strip().split(os.pathsep)[0]
    cand = Path(gopath) / "bin" / "minio"
    return str(cand) if cand.is_file() else None


class MinIO:
    """A MinIO server on loopback with one set of credentials."""

    ACCESS_KEY = "shardstreamtest"
    SECRET_KEY = "shardstreamtest-secret"
    REGION = "us-east-1"

    def __init__(self, bin_path: str, root: Path) -> None:
        self.bin_path = bin_path
        self.root = root
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        """The environment a client of this server needs (AWS SDK chain)."""
        env = dict(os.environ)
        env.update(
            AWS_ACCESS_KEY_ID=self.ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=self.SECRET_KEY,
            AWS_REGION=self.REGION,
            AWS_EC2_METADATA_DISABLED="true",
        )
        return env

    def start(self) -> None:
        env = dict(os.environ)
        env.update(
            MINIO_ROOT_USER=self.ACCESS_KEY,
            MINIO_ROOT_PASSWORD=self.SECRET_KEY,
            MINIO_BROWSER="off",
            MINIO_UPDATE="off",
        )
        log = (self.root / "minio.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.bin_path,
                "server",
                "--quiet",
                "--address",
                f"127.0.0.1:{self.port}",
                str(self.root / "data"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        # Readiness: MinIO's liveness endpoint answers 200 once it serves.
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"minio exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/minio/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"minio not ready in {START_TIMEOUT}s")
            # Polling a health endpoint: wait a little between probes.
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def create_bucket(self, bucket: str) -> None:
        """PUT /bucket."""
        self.request("PUT", f"/{bucket}")

    def put_dir(self, local: Path, bucket: str, prefix: str) -> None:
        """Uploads the files of ``local`` (one level) to s3://bucket/prefix/."""
        for p in sorted(local.iterdir()):
            self.request("PUT", f"/{bucket}/{prefix}/{p.name}", p.read_bytes())

    def request(self, method: str, path: str, body: bytes = b"") -> None:
        """One S3 request signed with AWS Signature Version 4 (path-style,
        no query string): enough to make buckets and objects without an S3
        SDK in the test environment."""
        now = datetime.datetime.now(datetime.timezone.utc)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = now.strftime("%Y%m%d")
        host = f"127.0.0.1:{self.port}"
        payload_hash = hashlib.sha256(body).hexdigest()
        headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
        signed = ";".join(sorted(headers))
        canonical = "\n".join(
            [
                method,
                path,
                "",
                "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
                signed,
                payload_hash,
            ]
        )
        scope = f"{day}/{self.REGION}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = ("AWS4" + self.SECRET_KEY).encode()
        for part in (day, self.REGION, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        req = urllib.request.Request(f"{self.endpoint}{path}", data=body, method=method)
        for k, v in headers.items():
            if k != "host":
                req.add_header(k, v)
        req.add_header(
            "Authorization",
            f"AWS4-HMAC-SHA256 Credential={self.ACCESS_KEY}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}",
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            if r.status != 200:
                raise RuntimeError(f"{method} {path}: HTTP {r.status}")


def write_reference_dataset(files: Path, out: Path, *, per_shard: int, per_chunk: int) -> None:
    """Packs ``files`` into plain (uncompressed) WebDataset tar shards and a
    manifest, independently of ``shardstream pack``: the client must read a
    dataset that any WebDataset writer made and that ``shardstream index``
    would describe the same way."""
    import io
    import json
    import tarfile

    groups: dict[str, list[Path]] = {}
    for p in sorted(files.iterdir()):
        groups.setdefault(p.name.split(".", 1)[0], []).append(p)
    keys = sorted(groups)
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for s, first_key in enumerate(range(0, len(keys), per_shard)):
        buf = io.BytesIO()
        chunks = []
        start = first = 0
        shard_keys = keys[first_key : first_key + per_shard]
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
            for i, key in enumerate(shard_keys):
                for p in groups[key]:
                    data = p.read_bytes()
                    info = tarfile.TarInfo(p.name)
                    info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
                    tf.addfile(info, io.BytesIO(data))
                if i + 1 - first == per_chunk or i == len(shard_keys) - 1:
                    end = tf.offset
                    chunks.append(
                        {
                            "offset": start,
                            "size": end - start,
                            "raw_size": end - start,
                            "first_sample": first,
                            "samples": i + 1 - first,
                        }
                    )
                    start, first = end, i + 1
        path = f"ref-{s:06d}.tar"
        (out / path).write_bytes(buf.getvalue())
        shards.append(
            {
                "path": path,
                "size": len(buf.getvalue()),
                "samples": len(shard_keys),
                "compression": "none",
                "chunks": chunks,
            }
        )
    (out / "manifest.json").write_text(json.dumps({"version": 1, "shards": shards}))
