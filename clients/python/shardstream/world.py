"""Which trainer rank and which DataLoader worker this process is.

The answers are worked out explicitly, in this order, and the functions say
where each number came from so a misconfigured launch fails with a message
that names it:

1. ``rank`` / ``world_size`` given to the dataset;
2. ``torch.distributed`` when its default process group is initialised;
3. the ``RANK`` / ``WORLD_SIZE`` environment variables (torchrun sets them);
4. rank 0 of a world of 1.

The pure function :func:`resolve_world` does the work so it can be tested
without torch.distributed or a changed environment (the idea of mosaicml
streaming's ``world.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["World", "current_worker", "current_world", "dist_world", "resolve_world"]


@dataclass(frozen=True)
class World:
    """A trainer rank's place in the job, and where the numbers came from."""

    rank: int
    world_size: int
    source: str


def _parse_env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment {name}={raw!r}: want an integer") from None


def resolve_world(
    *,
    rank: int | None = None,
    world_size: int | None = None,
    dist: tuple[int, int] | None = None,
    env: Mapping[str, str] | None = None,
) -> World:
    """Works out (rank, world_size).

    Arguments given explicitly win; a missing one comes from ``dist`` (the
    ``(rank, world_size)`` of an initialised torch.distributed group), else
    from ``env`` (``RANK``, ``WORLD_SIZE``), else rank 0 of a world of 1.
    Raises ValueError naming the source when the result is not a valid rank.
    """
    if env is None:
        env = {}
    sources: list[str] = []
    if rank is not None or world_size is not None:
        sources.append("arguments")
    if dist is not None:
        d_rank, d_world = dist
        source = "torch.distributed"
    else:
        e_rank = _parse_env_int(env, "RANK")
        e_world = _parse_env_int(env, "WORLD_SIZE")
        if e_rank is not None or e_world is not None:
            source = "environment RANK/WORLD_SIZE"
        else:
            source = "default (no torch.distributed, no RANK/WORLD_SIZE)"
        d_rank = 0 if e_rank is None else e_rank
        d_world = 1 if e_world is None else e_world
    if rank is None or world_size is None:
        sources.append(source)
    r = d_rank if rank is None else rank
    w = d_world if world_size is None else world_size
    where = " and ".join(sources)
    if (
        isinstance(r, bool)
        or isinstance(w, bool)
        or not isinstance(r, int)
        or not isinstance(w, int)
    ):
        raise TypeError(f"rank {r!r} / world_size {w!r} from {where}: want integers")
    if w < 1:
        raise ValueError(f"world_size {w} from {where}: must be at least 1")
    if not 0 <= r < w:
        raise ValueError(f"rank {r} from {where}: must be in [0, world_size {w})")
    return World(rank=r, world_size=w, source=where)


def dist_world() -> tuple[int, int] | None:
    """(rank, world size) of torch.distributed's default group, or None
    when it is not initialised in this process."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch built without distributed
        return None
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def current_world(
    rank: int | None = None,
    world_size: int | None = None,
    inherited: tuple[int, int] | None = None,
) -> World:
    """:func:`resolve_world` for this process: torch.distributed, else
    ``inherited`` (the group of the process that started this DataLoader
    worker), else os.environ."""
    return resolve_world(
        rank=rank, world_size=world_size, dist=dist_world() or inherited, env=os.environ
    )


def current_worker() -> tuple[int, int]:
    """(worker id, number of workers) of the DataLoader worker running this code.

    (0, 1) in the main process (``num_workers=0``).
    """
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    if info is None:
        return 0, 1
    return int(info.id), int(info.num_workers)
