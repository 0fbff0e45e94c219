"""The exceptions the client raises."""

from __future__ import annotations

import re

import grpc

__all__ = ["ShardStreamError", "from_rpc_error", "handshake_failed"]


class ShardStreamError(Exception):
    """A call to the shardstream service failed.

    ``code`` is the gRPC status code (``grpc.StatusCode``), ``details`` the
    server's message (it names the field, shard or offset at fault), ``method``
    the RPC and ``address`` the server it was sent to. The string form holds
    all four, so an uncaught error in a training log says what went wrong
    where.
    """

    def __init__(self, method: str, address: str, code: grpc.StatusCode, details: str) -> None:
        self.method = method
        self.address = address
        self.code = code
        self.details = details
        super().__init__(f"{method} at {address}: {code.name}: {details}")


# grpc-core's words, in an UNAVAILABLE status, for a TLS handshake that
# failed: a server certificate the client's roots do not verify, a client
# certificate the server refused, a plaintext client talking to a TLS
# server or the reverse. Trying again gets the same answer, so such errors
# are not retried: they end the call at once with a hint instead of after
# the whole timeout. With TLS 1.3 a client certificate the server refuses
# shows after the client's side of the handshake is done, as an alert the
# client cannot unwrap (TSI_DATA_CORRUPTED).
_HANDSHAKE = re.compile(
    r"handshake|SSL_ERROR|CERTIFICATE_VERIFY_FAILED|certificate required|tlsv1 alert|"
    r"WRONG_VERSION_NUMBER|TSI_DATA_CORRUPTED|Hostname Verification",
    re.IGNORECASE,
)


def handshake_failed(err: grpc.RpcError) -> bool:
    """Whether ``err`` is a TLS handshake failure (see _HANDSHAKE)."""
    return (
        isinstance(err, grpc.Call)
        and err.code() == grpc.StatusCode.UNAVAILABLE
        and _HANDSHAKE.search(err.details() or "") is not None
    )


# What to check, after the server's own words, for the errors a secured
# server gives a client that is not set up for it.
_HINTS = {
    grpc.StatusCode.UNAUTHENTICATED: (
        "the server wants a token its --auth-file knows: pass ShardStreamDataset(token=...) "
        "or set SHARDSTREAM_TOKEN"
    ),
    grpc.StatusCode.PERMISSION_DENIED: (
        "this token may not read that dataset: ask for it to be added to the token's line in "
        "the server's --auth-file"
    ),
}

_HANDSHAKE_HINT = (
    "the TLS handshake failed: check tls=True / root_certificates (SHARDSTREAM_TLS_CA) "
    "against the server's certificate, and client_cert/client_key (SHARDSTREAM_TLS_CERT, "
    "SHARDSTREAM_TLS_KEY) against its --client-ca, and that the certificate names the host "
    "dialled or tls_server_name (SHARDSTREAM_TLS_SERVER_NAME); a plaintext client cannot "
    "talk to a TLS server"
)


# A TLS server closes a plaintext client's connection without a word; so
# would a load balancer with no server behind it yet, so this is retried
# until the timeout, and then said.
_PLAINTEXT_HINT = (
    "the server closed the connection: if it has --tls-cert, connect with tls=True or "
    "root_certificates (SHARDSTREAM_TLS_CA)"
)


def from_rpc_error(
    method: str, address: str, err: grpc.RpcError, *, plaintext: bool = False
) -> ShardStreamError:
    """Wraps a grpc error (a ``grpc.Call``) as a ShardStreamError, with a
    hint for the authentication and TLS errors; ``plaintext`` says the
    channel had no TLS."""
    code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (err.details() if isinstance(err, grpc.Call) else None) or str(err)
    hint = _HANDSHAKE_HINT if handshake_failed(err) else _HINTS.get(code)
    if plaintext and code == grpc.StatusCode.UNAVAILABLE and "Socket closed" in details:
        hint = _PLAINTEXT_HINT
    if hint is not None:
        details = f"{details} ({hint})"
    return ShardStreamError(method, address, code, details)
