"""The dataset's checkpoint state, in the main process and in DataLoader workers.

A ShardStreamDataset's state in the main process is the job's resume token:
``{"resume_token": str, "epoch": int}``, the same on every rank.

torchdata's StatefulDataLoader asks each DataLoader worker's copy of the
dataset for its state as the worker yields a batch, and keeps, per worker,
the state that went with the last batch the training loop took. Worker ``w``
of ``N`` streams the steps ``w, w+N, …`` of the iteration, so its state is
where *it* stands (:class:`WorkerPosition`), not where the rank stands:
``{"epoch": int, "worker": {...}}``, deliberately without a ``resume_token``
key, so it is never mistaken for the job's token.

Two ways back:

- one worker's own state, loaded into the same worker of the same layout
  (StatefulDataLoader.load_state_dict with the same num_workers and world
  size): the worker resumes at its own next step (:meth:`WorkerPosition.resume`);
- all the workers' states of one StatefulDataLoader state merged into the
  job's token (:func:`resume_state`): the batches the loop took are a prefix
  of the iteration's steps (DataLoader's in-order round robin), so the token
  of the furthest worker is the token of the last step taken. That token
  loads into any num_workers and any world size.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["WorkerPosition", "resume_state"]

# torchdata's key for the batches a StatefulDataLoader state counts past its
# snapshot (snapshot_every_n_steps > 1); torchdata replays those steps itself,
# a merge of the workers' snapshots cannot.
_STEPS_SINCE_SNAPSHOT = "_steps_since_snapshot"


def _int(where: str, value: object, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where}: {value!r}, want an int >= {minimum}")
    return value


def _str(where: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{where}: {type(value).__name__}, want str")
    return value


@dataclass(frozen=True)
class WorkerPosition:
    """Where DataLoader worker ``worker`` of ``workers`` stands in an iteration.

    The iteration started at ``start_token`` (the same for every worker of
    the loader); ``steps`` counts its steps from there up to and including
    the last one this worker handed over (0: none yet), and ``token`` is the
    resume token after that step (``start_token`` while ``steps`` is 0).
    """

    epoch: int
    start_token: str
    worker: int
    workers: int
    world_size: int
    steps: int
    token: str

    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "worker": {
                "start_token": self.start_token,
                "index": self.worker,
                "workers": self.workers,
                "world_size": self.world_size,
                "steps": self.steps,
                "token": self.token,
            },
        }

    @staticmethod
    def parse(state: Mapping[str, Any]) -> WorkerPosition:
        w = state["worker"]
        if not isinstance(w, Mapping):
            raise TypeError(f"state_dict worker: {type(w).__name__}, want a dict")
        workers = _int("state_dict worker.workers", w.get("workers"), 1)
        pos = WorkerPosition(
            epoch=_int("state_dict epoch", state.get("epoch")),
            start_token=_str("state_dict worker.start_token", w.get("start_token")),
            worker=_int("state_dict worker.index", w.get("index")),
            workers=workers,
            world_size=_int("state_dict worker.world_size", w.get("world_size"), 1),
            steps=_int("state_dict worker.steps", w.get("steps")),
            token=_str("state_dict worker.token", w.get("token")),
        )
        if pos.worker >= workers:
            raise ValueError(f"state_dict worker.index: {pos.worker}, must be < workers {workers}")
        return pos

    def after(self, steps: int, token: str) -> WorkerPosition:
        """This worker after handing over the iteration's step ``steps - 1``."""
        return WorkerPosition(
            self.epoch,
            self.start_token,
            self.worker,
            self.workers,
            self.world_size,
            steps,
            token,
        )

    def resume(self) -> tuple[str, int]:
        """(token, first): this worker's next step is ``first`` steps after
        ``token``'s point; it then reads every ``workers``-th step as before.

        Its last step was ``steps - 1``, its next is ``steps - 1 + workers``,
        which is ``workers - 1`` after the token of ``steps - 1``; with none
        handed over yet it is still ``worker`` after the start."""
        if self.steps == 0:
            return self.start_token, self.worker
        return self.token, self.workers - 1


def _dataset_states(state: object, path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every dataset state nested in ``state`` (a StatefulDataLoader state
    holds them under its own keys), with where it was found."""
    if not isinstance(state, Mapping):
        return
    if "resume_token" in state or "worker" in state:
        yield path or "state", state
        return
    since = state.get(_STEPS_SINCE_SNAPSHOT)
    if isinstance(since, int) and since > 0:
        raise ValueError(
            f"{path or 'state'}: a StatefulDataLoader state {since} steps past its last "
            "snapshot (snapshot_every_n_steps > 1): load it with loader.load_state_dict, "
            "or take states with snapshot_every_n_steps=1"
        )
    for key, value in state.items():
        yield from _dataset_states(value, f"{path}.{key}" if path else str(key))


def resume_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """The job's ``{"resume_token", "epoch"}`` from a dataset's state or
    from a whole StatefulDataLoader state (with any number of workers).

    The workers' states must be those of one loader: one epoch, one start,
    every worker ``0 … N-1`` present. The furthest worker's token is the
    token of the last step the training loop took.
    """
    found = list(_dataset_states(state, ""))
    if not found:
        raise ValueError(
            "state_dict: neither a ShardStreamDataset state nor a StatefulDataLoader state "
            "holding one (no 'resume_token' or 'worker' entry)"
        )
    plain = [(where, s) for where, s in found if "worker" not in s]
    if plain:
        if len(found) > 1:
            raise ValueError(
                f"state_dict: {len(found)} dataset states ({', '.join(w for w, _ in found)}); "
                "want one main-process state or the states of one loader's workers"
            )
        token = plain[0][1].get("resume_token") or ""
        if not isinstance(token, str):
            raise TypeError(f"state_dict resume_token: {type(token).__name__}, want str")
        return {"resume_token": token, "epoch": plain[0][1].get("epoch")}
    positions = [(where, WorkerPosition.parse(s)) for where, s in found]
    first = positions[0][1]
    for where, p in positions:
        if (p.epoch, p.start_token, p.workers) != (first.epoch, first.start_token, first.workers):
            raise ValueError(
                f"state_dict: {where} is worker {p.worker} of {p.workers} at epoch {p.epoch}, "
                f"{positions[0][0]} worker {first.worker} of {first.workers} at epoch "
                f"{first.epoch}, or they started at other tokens: not one loader's workers"
            )
    indexes = sorted(p.worker for _, p in positions)
    if indexes != list(range(first.workers)):
        raise ValueError(
            f"state_dict: the states of workers {indexes}; want each of the {first.workers} "
            "workers once"
        )
    furthest = max((p for _, p in positions), key=lambda p: p.steps)
    token = furthest.token if furthest.steps else furthest.start_token
    return {"resume_token": token, "epoch": furthest.epoch}
