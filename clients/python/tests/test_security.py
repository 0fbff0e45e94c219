"""The client against a secured ``shardstream serve``: TLS, mutual TLS and
bearer tokens from an auth file (certificates made with openssl). Each
refusal is a ShardStreamError with its code and a hint, at once, not after
the timeout; the token never shows in a repr, an error or a log."""

from __future__ import annotations

import hashlib
import logging
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from torch.utils.data import DataLoader

import shardstream
from tests.conftest import SAMPLES, Packed, workers_kw
from tests.servertest import Server
from tests.test_server import assert_exactly_once, read_epoch
from tests.tlstest import issue, make_ca

TOKEN_A = "tok-a-" + "1" * 40  # may read "default", the served dataset
TOKEN_B = "tok-b-" + "2" * 40  # may read only "other"

KW: dict[str, Any] = {"seed": 5, "epoch": 1, "batch_size": 16}

# A refusal must come well before the client's timeout (TIMEOUT): a wrong
# CA is not "the server is not up yet".
TIMEOUT = 30.0
PROMPT = 10.0


@dataclass(frozen=True)
class Certs:
    ca: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("certs")
    ca, other = make_ca(d / "ca", "ca"), make_ca(d / "other", "other-ca")
    issue(ca, "server", server=True)
    cc, ck = issue(ca, "client", server=False)
    oc, ok = issue(other, "client", server=False)
    return Certs(ca.cert, cc, ck, other.cert, oc, ok)


@pytest.fixture(scope="module")
def secure(
    shardstream_bin: Path, dataset: Packed, certs: Certs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """``serve`` with TLS, mutual TLS and an auth file."""
    d = tmp_path_factory.mktemp("secure")
    auth = d / "auth.txt"

    def sha(t: str) -> str:
        return hashlib.sha256(t.encode()).hexdigest()

    auth.write_text(f"# test clients\nteam-a {sha(TOKEN_A)} default\nteam-b {sha(TOKEN_B)} other\n")
    ca_dir = certs.ca.parent
    s = Server(
        shardstream_bin,
        dataset.path,
        log=d / "serve.log",
        extra=(
            "--tls-cert",
            str(ca_dir / "server.crt"),
            "--tls-key",
            str(ca_dir / "server.key"),
            "--client-ca",
            str(certs.ca),
            "--auth-file",
            str(auth),
        ),
        client=good(certs),
    )
    s.start()
    yield s
    s.stop()


def good(certs: Certs, **over: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "root_certificates": str(certs.ca),
        "client_cert": str(certs.client_cert),
        "client_key": str(certs.client_key),
        "token": TOKEN_A,
        "timeout": TIMEOUT,
    }
    kw.update(over)
    return {k: v for k, v in kw.items() if v is not None}


def refused(address: str, within: float = PROMPT, **kw: Any) -> shardstream.ShardStreamError:
    """The error of reading from ``address``, checked to come within
    ``within`` seconds."""
    start = time.monotonic()
    with pytest.raises(shardstream.ShardStreamError) as info:
        list(shardstream.ShardStreamDataset(address, **KW, **kw))
    took = time.monotonic() - start
    assert took < within, f"refused after {took:.1f}s, want within {within}s: {info.value}"
    return info.value


def test_tls_mtls_token_reads_epoch(secure: Server, certs: Certs) -> None:
    out, plan = read_epoch(secure.address, 2, **KW, **good(certs))
    assert_exactly_once([n for r in out for n in r], plan.dropped, SAMPLES)


def test_tls_server_name(secure: Server, certs: Certs) -> None:
    # 127.0.0.1 dialled, the certificate checked against the name it
    # carries (DNS:localhost): how trainers reach loaders advertised by
    # pod IP with one certificate naming a Service.
    out, plan = read_epoch(secure.address, 1, **KW, **good(certs, tls_server_name="localhost"))
    assert_exactly_once([n for r in out for n in r], plan.dropped, SAMPLES)
    with pytest.raises(ValueError, match="tls_server_name"):
        shardstream.ShardStreamDataset(secure.address, **KW, tls_server_name="bad name")


def test_env_settings(secure: Server, certs: Certs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDSTREAM_TLS_CA", str(certs.ca))
    monkeypatch.setenv("SHARDSTREAM_TLS_CERT", str(certs.client_cert))
    monkeypatch.setenv("SHARDSTREAM_TLS_KEY", str(certs.client_key))
    monkeypatch.setenv("SHARDSTREAM_TOKEN", TOKEN_A)
    ds = shardstream.ShardStreamDataset(secure.address, **KW)
    assert ds.tls
    assert sum(len(b) for b in ds) > 0
    # A token from the environment is not stored: not in a pickle either.
    assert TOKEN_A.encode() not in pickle.dumps(ds)


def test_no_token(secure: Server, certs: Certs) -> None:
    err = refused(secure.address, **good(certs, token=None))
    assert err.code == grpc.StatusCode.UNAUTHENTICATED, err
    assert "SHARDSTREAM_TOKEN" in str(err)


def test_wrong_token(secure: Server, certs: Certs) -> None:
    err = refused(secure.address, **good(certs, token="not-a-token"))
    assert err.code == grpc.StatusCode.UNAUTHENTICATED, err
    assert "not-a-token" not in str(err)


def test_token_for_another_dataset(secure: Server, certs: Certs) -> None:
    err = refused(secure.address, **good(certs, token=TOKEN_B))
    assert err.code == grpc.StatusCode.PERMISSION_DENIED, err
    assert TOKEN_B not in str(err)
    assert "--auth-file" in str(err)


@pytest.mark.parametrize(
    "case",
    [
        "wrong CA",
        "no client certificate",
        "client certificate of another CA",
        "plaintext",
        "server name not in the certificate",
    ],
)
def test_tls_refused(secure: Server, certs: Certs, case: str) -> None:
    cases: dict[str, dict[str, Any]] = {
        "wrong CA": {"root_certificates": str(certs.other_ca)},
        "no client certificate": {"client_cert": None, "client_key": None},
        # The name checked is tls_server_name's, not the dialled IP's
        # (which the certificate does name).
        "server name not in the certificate": {"tls_server_name": "loaders.example"},
        "client certificate of another CA": {
            "client_cert": str(certs.other_client_cert),
            "client_key": str(certs.other_client_key),
        },
        # Retried to the timeout (a closed connection may be a load
        # balancer waiting for its servers), then said with a TLS hint.
        "plaintext": {
            "root_certificates": None,
            "client_cert": None,
            "client_key": None,
            "timeout": 3.0,
        },
    }
    over = cases[case]
    within = PROMPT + over.get("timeout", 0.0)
    err = refused(secure.address, within, **good(certs, **over))
    assert err.code == grpc.StatusCode.UNAVAILABLE, err
    assert "TLS" in str(err), err


def test_workers(secure: Server, certs: Certs, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    want = [b.step for b in shardstream.ShardStreamDataset(secure.address, **KW, **good(certs))]
    ds = shardstream.ShardStreamDataset(secure.address, **KW, **good(certs))
    got = list(DataLoader(ds, batch_size=None, **workers_kw(2)))
    assert [b.step for b in got] == want
    assert TOKEN_A not in caplog.text


def test_spawned_worker_gets_token(secure: Server, certs: Certs) -> None:
    ds = shardstream.ShardStreamDataset(secure.address, **KW, **good(certs))
    got = list(DataLoader(ds, batch_size=None, num_workers=1, multiprocessing_context="spawn"))
    assert len(got) == len(ds)


def test_token_hidden(certs: Certs) -> None:
    ds = shardstream.ShardStreamDataset("127.0.0.1:1", **KW, **good(certs))
    for s in (repr(ds), str(ds), repr(vars(ds)), str(ds.state_dict())):
        assert TOKEN_A not in s, s
    assert "token=<set" in repr(ds)
    # Carried in a pickle for DataLoader workers, and back out of it.
    back = pickle.loads(pickle.dumps(ds))
    assert back._security().token == TOKEN_A


def test_bad_arguments(certs: Certs, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both or neither"):
        shardstream.ShardStreamDataset("x:1", batch_size=1, client_cert=str(certs.client_cert))
    with pytest.raises(ValueError, match="no such file"):
        shardstream.ShardStreamDataset("x:1", batch_size=1, root_certificates=tmp_path / "nope")
    with pytest.raises(ValueError, match="spaces") as info:
        shardstream.ShardStreamDataset("x:1", batch_size=1, token="secret value")
    assert "secret" not in str(info.value)
    assert shardstream.ShardStreamDataset("x:1", batch_size=1, tls=True).tls
