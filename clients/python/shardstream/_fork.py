"""Starting DataLoader workers safely in a process that has used gRPC.

grpcio does not survive ``fork()`` once a process has made calls: with
grpcio 1.85.1 on a loaded machine about 1 fork in 17 of such a process
left the child stuck creating its first channel (and once the parent hung
in grpc's own pre-fork handler), whatever ``GRPC_ENABLE_FORK_SUPPORT`` says
(docs/python-client.md has the figures). A process that has only imported
grpc forks safely (0 in 120 under the same load).

So workers come from a fork server: a clean process started once, which
has imported torch and shardstream but made no call, and forks each worker
from there (0.13 s to an epoch's first batch with two workers; spawn
re-imports torch in every worker: 3.3 s). And a process that forks after
using gRPC is told so, once, before the fork, in case it hangs.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import threading
import warnings

__all__ = ["note_grpc_used", "worker_context"]

_PRELOAD = ("torch", "shardstream")

_lock = threading.Lock()
_context: multiprocessing.context.BaseContext | None = None
_used = False  # this process has opened a gRPC channel
_warned = False
_registered = False  # the at-fork handlers (inherited by forked children)


def worker_context() -> multiprocessing.context.BaseContext:
    """The ``multiprocessing_context`` to start DataLoader workers with.

    A ``forkserver`` context whose server preloads torch and shardstream
    (where the platform has one; ``spawn`` elsewhere). Pass it to
    ``DataLoader``/``StatefulDataLoader(..., multiprocessing_context=...)``;
    :class:`~shardstream.ShardStreamLoader` uses it by default. As with
    spawn, ``decode``, ``transform`` and ``collate_fn`` must be picklable
    (module-level) and the main script needs an ``if __name__ ==
    "__main__":`` guard.
    """
    global _context
    with _lock:
        if _context is None:
            if "forkserver" in multiprocessing.get_all_start_methods():
                ctx = multiprocessing.get_context("forkserver")
                # Add to, not replace, what the program preloads itself. The
                # list is module state of multiprocessing.forkserver, read
                # when the server starts.
                from multiprocessing import forkserver

                have = list(getattr(forkserver._forkserver, "_preload_modules", []))
                ctx.set_forkserver_preload(have + [m for m in _PRELOAD if m not in have])
                _context = ctx
            else:
                _context = multiprocessing.get_context("spawn")
        return _context


def note_grpc_used() -> None:
    """Called when this process opens a gRPC channel: from then on a fork
    (DataLoader's default worker start on Linux) is warned about."""
    global _used, _registered
    if _used:
        return
    with _lock:
        _used = True
        if not _registered and hasattr(os, "register_at_fork"):
            os.register_at_fork(before=_before_fork, after_in_child=_after_fork_child)
            _registered = True


def _before_fork() -> None:
    global _warned
    if not _used or _warned:
        return
    _warned = True
    warnings.warn(
        "shardstream: this process forks after using gRPC; grpcio can hang in the child (or "
        "in the fork) then. Start DataLoader workers with "
        "multiprocessing_context=shardstream.worker_context() (ShardStreamLoader does), "
        "or 'spawn'",
        RuntimeWarning,
        stacklevel=2,
    )


def _after_fork_child() -> None:
    # The child has not opened a channel itself; its own first one arms the
    # warning for its forks (the handlers are inherited, not registered again).
    # Another thread may have held the lock at the fork: the child's copy
    # would stay locked.
    global _lock, _used, _warned
    _lock = threading.Lock()
    _used = False
    _warned = False
