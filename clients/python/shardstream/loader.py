"""ShardStreamLoader: a DataLoader over a ShardStreamDataset whose
``state_dict()`` follows the training loop with any number of workers.

With DataLoader workers, the batches are handed over in the worker processes
and the dataset object in the main process never sees them, so its
``state_dict()`` would not move. This loader has every worker send each
batch's resume token along with the item and records it in the main
process's dataset as the training loop takes the item: ``ds.state_dict()``
(or ``loader.state_dict()``) is then the token of the last batch the loop
consumed, whatever ``num_workers``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from torch.utils.data import DataLoader, IterableDataset
from torch.utils.data._utils.collate import default_convert
from torch.utils.data._utils.pin_memory import pin_memory

from shardstream._fork import worker_context
from shardstream.dataset import ShardStreamDataset

__all__ = ["ShardStreamLoader"]


class _Tokened:
    """One item on its way from a DataLoader worker, with its batch's token.

    Neither a sequence nor a mapping, so DataLoader's conversions leave it
    whole; it pins its item when the DataLoader pins memory.
    """

    __slots__ = ("item", "token")

    def __init__(self, token: str, item: Any) -> None:
        self.token = token
        self.item = item

    def pin_memory(self) -> _Tokened:
        # torch's own recursive pinning (tensors in lists, dicts, ...), the
        # function DataLoader calls on items without a pin_memory method.
        return _Tokened(self.token, pin_memory(self.item))  # type: ignore[no-untyped-call]


class _TokenedDataset(IterableDataset[_Tokened]):
    """The dataset's items, each with its token (runs in the workers)."""

    def __init__(self, dataset: ShardStreamDataset) -> None:
        self.dataset = dataset

    def __iter__(self) -> Iterator[_Tokened]:
        for token, item in self.dataset._items(with_token=True):
            yield _Tokened(token, item)

    def __len__(self) -> int:
        return len(self.dataset)


class _TokenedCollate:
    """The user's collate_fn (default: DataLoader's conversion to tensors)
    applied to the item only. A class, so spawned workers can unpickle it."""

    def __init__(self, collate: Callable[[Any], Any]) -> None:
        self.collate = collate

    # t is a _Tokened; typed Any to fit DataLoader's collate_fn type, which
    # assumes a list (it is one item with batch_size=None).
    def __call__(self, t: Any) -> _Tokened:
        return _Tokened(t.token, self.collate(t.item))


class ShardStreamLoader(DataLoader[Any]):
    """A ``torch.utils.data.DataLoader`` over a :class:`ShardStreamDataset`.

    It yields what ``DataLoader(dataset, batch_size=None, ...)`` yields, in
    the same order for any ``num_workers``, and records each batch's resume
    token in ``dataset`` (the main process's object) as the training loop
    takes the batch, so ``dataset.state_dict()`` and this loader's
    :meth:`state_dict` are the token of the last batch consumed.

    ``batch_size`` is always None (the server batches). With workers, the
    ``multiprocessing_context`` defaults to :func:`~shardstream.worker_context`
    (a fork server that has imported torch and shardstream): ``len()`` and a
    previous iteration use gRPC in the main process, and gRPC does not
    survive a fork; ``decode`` and ``collate_fn`` must then be picklable
    (module-level functions). ``persistent_workers`` is refused: a persistent
    worker keeps the dataset copy of the first epoch and would not see
    ``set_epoch`` or ``load_state_dict``. Other keyword arguments go to
    DataLoader.
    """

    def __init__(
        self,
        dataset: ShardStreamDataset,
        *,
        num_workers: int = 0,
        collate_fn: Callable[[Any], Any] | None = None,
        multiprocessing_context: Any = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(dataset, ShardStreamDataset):
            raise TypeError(f"dataset: {type(dataset).__name__}, want a ShardStreamDataset")
        if kwargs.pop("batch_size", None) is not None:
            raise ValueError("batch_size: the server batches; ShardStreamLoader uses None")
        if kwargs.get("persistent_workers"):
            raise ValueError(
                "persistent_workers: a persistent worker would miss set_epoch() and "
                "load_state_dict(); ShardStreamLoader starts its workers per iteration"
            )
        if kwargs.get("in_order") is False:
            raise ValueError("in_order: False would hand batches over out of step order")
        if num_workers > 0 and multiprocessing_context is None:
            multiprocessing_context = worker_context()
        self.shardstream_dataset = dataset
        super().__init__(
            _TokenedDataset(dataset),
            batch_size=None,
            num_workers=num_workers,
            collate_fn=_TokenedCollate(collate_fn or default_convert),
            multiprocessing_context=multiprocessing_context,
            **kwargs,
        )

    # A generator rather than DataLoader's iterator class: it unwraps each
    # item and records its token and the loop's data wait as the loop takes
    # it. auto_epoch is decided here, before the workers get their copies
    # of the dataset, and the end of the epoch is seen here, not in them.
    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        ds = self.shardstream_dataset
        ds._start_epoch()
        asked = time.monotonic()
        for t in super().__iter__():
            ds.stats.record_wait(time.monotonic() - asked)
            ds._token = t.token
            yield t.item
            asked = time.monotonic()
        ds._epoch_done = True

    def state_dict(self) -> dict[str, Any]:
        """The dataset's :meth:`~ShardStreamDataset.state_dict`."""
        return self.shardstream_dataset.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """The dataset's :meth:`~ShardStreamDataset.load_state_dict`."""
        self.shardstream_dataset.load_state_dict(state)
