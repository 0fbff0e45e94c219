"""The exceptions the client raises."""

from __future__ import annotations

import grpc

__all__ = ["ShardStreamError", "from_rpc_error"]


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


def from_rpc_error(method: str, address: str, err: grpc.RpcError) -> ShardStreamError:
    """Wraps a grpc error (a ``grpc.Call``) as a ShardStreamError."""
    code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (err.details() if isinstance(err, grpc.Call) else None) or str(err)
    return ShardStreamError(method, address, code, details)
