"""Columnar batches: each field of a batch as one tensor over the received bytes.

A loader asked for ``StreamBatchesRequest.columnar`` sends a batch as
``Batch.columns``: per field one buffer of every sample's value plus packed
little-endian int64 offsets (or ``fixed_size`` when every value has one
size), keys as one buffer plus offsets, and the samples' (shard, index) as
packed arrays (see proto/shardstream/v1/shardstream.proto).

The response is not parsed by protobuf: :func:`parse_response` walks the few
dozen top-level tags of the message itself and makes each field's tensor a
view of the bytes gRPC handed over (``torch.frombuffer``), so field data is
never copied in this process and no Python object is made per sample. The
protobuf parser would copy every field's bytes twice (into its arena, then
into a ``bytes`` object per access) and makes each field its own storage
anyway. Hand-written for that reason only; tests/test_columnar.py checks it
against the protobuf parser on real server output.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from shardstream.types import Batch, Sample

__all__ = ["Column", "ColumnarBatch", "ColumnarFormatError", "parse_response"]


class ColumnarFormatError(ValueError):
    """A columnar message that breaks the format's rules (or one the server
    sent without columns: a server that predates columnar batches)."""


class Column:
    """One field of every sample of a :class:`ColumnarBatch`.

    Attributes:
      name: the field's name (``"tokens"``, ``"jpg"``, ...).
      data: every sample's value, concatenated: a 2-D ``uint8`` tensor
        ``[batch, fixed_size]`` when every sample has the field at one size
        (view it as another type with ``data.view(torch.int32)``), else a
        1-D ``uint8`` tensor with sample ``i``'s value at
        ``data[offsets[i]:offsets[i+1]]``.
      offsets: ``int64`` tensor of ``batch + 1`` offsets into ``data``;
        ``None`` for a fixed-size field.
      fixed_size: bytes per sample of a fixed-size field, else ``None``.
      present: ``bool`` tensor ``[batch]``, whether sample ``i`` has the
        field; ``None`` when every sample has it. A sample without the field
        has an empty range in ``data``.

    The tensors view the received message, which is immutable: clone one
    before writing to it in place.
    """

    __slots__ = ("data", "fixed_size", "name", "offsets", "present")

    def __init__(
        self,
        name: str,
        data: torch.Tensor,
        offsets: torch.Tensor | None,
        fixed_size: int | None,
        present: torch.Tensor | None,
    ) -> None:
        self.name = name
        self.data = data
        self.offsets = offsets
        self.fixed_size = fixed_size
        self.present = present

    def __len__(self) -> int:
        if self.offsets is None:
            return int(self.data.shape[0])
        return int(self.offsets.shape[0]) - 1

    def __repr__(self) -> str:
        size = f"fixed_size={self.fixed_size}" if self.fixed_size is not None else "variable"
        missing = "" if self.present is None else f", missing={int((~self.present).sum())}"
        return f"Column({self.name!r}, samples={len(self)}, {size}, bytes={self.nbytes}{missing})"

    @property
    def nbytes(self) -> int:
        return int(self.data.numel())

    def value(self, i: int) -> bytes | None:
        """Sample ``i``'s value as bytes (a copy), ``None`` when it lacks the field."""
        if self.present is not None and not bool(self.present[i]):
            return None
        if self.offsets is None:
            return self.data[i].numpy().tobytes()
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.data[a:b].numpy().tobytes()

    def _map(self, f: Any) -> Column:
        return Column(
            self.name,
            f(self.data),
            None if self.offsets is None else f(self.offsets),
            self.fixed_size,
            None if self.present is None else f(self.present),
        )


class ColumnarBatch:
    """One step's samples for one rank, by field: what
    ``ShardStreamDataset(columnar=True)`` yields.

    ``batch["tokens"]`` is the :class:`Column` of a field; ``batch.columns``
    maps every field name (in order of first appearance) to its column.
    ``shards`` and ``indices`` (``int64 [batch]``) are the samples'
    identities, ``key_bytes`` (``uint8``) and ``key_offsets`` (``int64
    [batch + 1]``) their keys (:meth:`keys` decodes them). ``rank``,
    ``epoch``, ``step`` and ``resume_token`` are those of :class:`Batch`.
    :meth:`samples` is the same batch as a :class:`Batch` of sample dicts.

    It is not a Mapping or a Sequence, so DataLoader's default conversion
    passes it through untouched, and ``pin_memory=True`` calls
    :meth:`pin_memory`. Between DataLoader worker processes its tensors
    travel through shared memory, as all tensors do.
    """

    __slots__ = (
        "columns",
        "epoch",
        "indices",
        "key_bytes",
        "key_offsets",
        "rank",
        "resume_token",
        "shards",
        "step",
    )

    def __init__(
        self,
        *,
        rank: int,
        epoch: int,
        step: int,
        resume_token: str,
        shards: torch.Tensor,
        indices: torch.Tensor,
        key_bytes: torch.Tensor,
        key_offsets: torch.Tensor,
        columns: dict[str, Column],
    ) -> None:
        self.rank = rank
        self.epoch = epoch
        self.step = step
        self.resume_token = resume_token
        self.shards = shards
        self.indices = indices
        self.key_bytes = key_bytes
        self.key_offsets = key_offsets
        self.columns = columns

    def __len__(self) -> int:
        return int(self.shards.shape[0])

    def __getitem__(self, name: str) -> Column:
        return self.columns[name]

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def __repr__(self) -> str:
        return (
            f"ColumnarBatch(rank={self.rank}, epoch={self.epoch}, step={self.step}, "
            f"samples={len(self)}, fields={list(self.columns)})"
        )

    @property
    def nbytes(self) -> int:
        """Bytes of field data (keys not counted), as :class:`~shardstream.Stats` counts them."""
        return sum(c.nbytes for c in self.columns.values())

    def keys(self) -> list[str]:
        """The samples' keys (a Python string each: not for the hot path)."""
        raw = self.key_bytes.numpy().tobytes()
        off = self.key_offsets.tolist()
        return [raw[off[i] : off[i + 1]].decode() for i in range(len(self))]

    def samples(self) -> Batch:
        """The batch as a :class:`Batch` of sample dicts, like
        ``columnar=False`` yields (fields in column order). It makes a
        Python object per sample and field: for code that wants dicts, not
        for the hot path."""
        keys = self.keys()
        shards, indices = self.shards.tolist(), self.indices.tolist()
        out: list[Sample] = [
            {"__key__": k, "__shard__": s, "__index__": i}
            for k, s, i in zip(keys, shards, indices, strict=True)
        ]
        for name, col in self.columns.items():
            for i, d in enumerate(out):
                v = col.value(i)
                if v is not None:
                    d[name] = v
        return Batch(
            out, rank=self.rank, epoch=self.epoch, step=self.step, resume_token=self.resume_token
        )

    def _map(self, f: Any) -> ColumnarBatch:
        return ColumnarBatch(
            rank=self.rank,
            epoch=self.epoch,
            step=self.step,
            resume_token=self.resume_token,
            shards=f(self.shards),
            indices=f(self.indices),
            key_bytes=f(self.key_bytes),
            key_offsets=f(self.key_offsets),
            columns={n: c._map(f) for n, c in self.columns.items()},
        )

    def pin_memory(self) -> ColumnarBatch:
        """A copy with every tensor in page-locked memory (what DataLoader's
        ``pin_memory=True`` calls), for ``non_blocking`` copies to a GPU."""
        return self._map(lambda t: t.pin_memory())

    def share_memory_(self) -> ColumnarBatch:
        """A copy whose tensors all view one storage in shared memory.

        What a DataLoader worker yields: torch moves every storage of an
        item to its own shared-memory segment to pass it to the training
        loop, and making a segment costs far more than copying a batch
        (measured here: 2-8 ms a segment against ~25 us to copy 256 KiB), so
        one segment a batch instead of one a field and array."""
        tensors: list[torch.Tensor] = []

        def collect(t: torch.Tensor) -> torch.Tensor:
            tensors.append(t)
            return t

        self._map(collect)
        offsets, total = [], 0
        for t in tensors:
            offsets.append(total)
            total += (t.numel() * t.element_size() + 7) // 8 * 8  # aligned for any dtype view
        buf = torch.empty(total, dtype=torch.uint8)
        buf.share_memory_()  # type: ignore[no-untyped-call]
        it = iter(zip(tensors, offsets, strict=True))

        def place(t: torch.Tensor) -> torch.Tensor:
            src, off = next(it)
            raw = buf[off : off + src.numel() * src.element_size()]
            dst: torch.Tensor = raw.view(src.dtype).view(src.shape)
            dst.copy_(src)
            return dst

        return self._map(place)

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> ColumnarBatch:
        """A copy with every tensor on ``device``."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))


# ---- the wire form ------------------------------------------------------------

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            break
    raise ColumnarFormatError(f"bad varint before byte {pos}")


def _fields(buf: bytes, pos: int, end: int) -> list[tuple[int, int, int, int]]:
    """The fields of the message in buf[pos:end]: (number, wire type, a, b),
    with a the value of a varint, or [a, b) the range of a length-delimited
    field. Unknown wire types of additive fields (fixed 32/64) are skipped
    over; groups are not used by proto3 and are an error."""
    out = []
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        num, wt = tag >> 3, tag & 7
        if wt == _VARINT:
            v, pos = _varint(buf, pos, end)
            out.append((num, wt, v, 0))
        elif wt == _LEN:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise ColumnarFormatError(f"field {num}: {n} bytes past the message end")
            out.append((num, wt, pos, pos + n))
            pos += n
        elif wt == _I64:
            pos += 8
        elif wt == _I32:
            pos += 4
        else:
            raise ColumnarFormatError(f"field {num}: wire type {wt} at byte {pos}")
    if pos != end:
        raise ColumnarFormatError("message overruns its length")
    return out


def _bytes_view(buf: bytes, a: int, b: int) -> torch.Tensor:
    """A uint8 tensor over buf[a:b], sharing its memory (its own storage,
    starting at the value: a view as a wider type needs no alignment of
    its storage offset)."""
    if a == b:
        return torch.empty(0, dtype=torch.uint8)
    with warnings.catch_warnings():
        # torch warns that the bytes object is not writable; the docs say
        # the tensors are read-only views.
        warnings.simplefilter("ignore", UserWarning)
        return torch.frombuffer(buf, dtype=torch.uint8, offset=a, count=b - a)


def parse_response(raw: bytes) -> ColumnarBatch:
    """A serialized StreamBatchesResponse with a columnar batch, as a
    :class:`ColumnarBatch` whose tensors view ``raw``."""
    if not isinstance(raw, bytes):
        raw = bytes(raw)
    batch = None
    for num, wt, a, b in _fields(raw, 0, len(raw)):
        if num == 1 and wt == _LEN:
            batch = (a, b)
    if batch is None:
        raise ColumnarFormatError("response without a batch")
    rank = epoch = step = 0
    token = ""
    cols: tuple[int, int] | None = None
    samples = 0
    for num, wt, a, b in _fields(raw, *batch):
        if wt == _VARINT:
            if num == 1:
                rank = a
            elif num == 2:
                epoch = a
            elif num == 3:
                step = a - (1 << 64) if a >= 1 << 63 else a
        elif wt == _LEN:
            if num == 4:
                samples += 1
            elif num == 5:
                token = raw[a:b].decode()
            elif num == 6:
                cols = (a, b)
    if cols is None:
        raise ColumnarFormatError(
            f"step {step}: a batch of {samples} samples without columns: the server "
            "predates columnar batches (StreamBatchesRequest.columnar); upgrade it, "
            "or read with columnar=False"
        )
    count = 0
    ranges: dict[int, tuple[int, int]] = {}
    col_ranges: list[tuple[int, int]] = []
    for num, wt, a, b in _fields(raw, *cols):
        if num == 1 and wt == _VARINT:
            count = a
        elif num == 6 and wt == _LEN:
            col_ranges.append((a, b))
        elif wt == _LEN:
            ranges[num] = (a, b)
    n = count

    # The int64 arrays (ids and offsets) are small (8 bytes a sample each):
    # one copy into one aligned array, read as a tensor.
    parts: list[np.ndarray[Any, Any]] = []

    def int64s(what: str, r: tuple[int, int], want: int) -> int:
        a, b = r
        if b - a != 8 * want:
            raise ColumnarFormatError(f"step {step}: {what}: {b - a} bytes, want {8 * want}")
        parts.append(np.frombuffer(raw, dtype="<i8", count=want, offset=a))
        return len(parts) - 1

    def span(num: int) -> tuple[int, int]:
        return ranges.get(num, (0, 0))

    ids = (int64s("shards", span(2), n), int64s("indices", span(3), n))
    kb = span(4)
    ko = int64s("key_offsets", span(5), n + 1)
    columns: list[tuple[str, tuple[int, int], int | None, int | None, tuple[int, int] | None]] = []
    for ca, cb in col_ranges:
        name = ""
        data = present = (0, 0)
        offsets: tuple[int, int] | None = None
        fixed: int | None = None
        for num, wt, a, b in _fields(raw, ca, cb):
            if num == 1 and wt == _LEN:
                name = raw[a:b].decode()
            elif num == 2 and wt == _LEN:
                data = (a, b)
            elif num == 3 and wt == _LEN:
                offsets = (a, b)
            elif num == 4 and wt == _VARINT:
                fixed = a
            elif num == 5 and wt == _LEN:
                present = (a, b)
        size = data[1] - data[0]
        oi: int | None = None
        if fixed is not None:
            if size != fixed * n:
                raise ColumnarFormatError(
                    f"step {step}: field {name!r}: {size} bytes, want {n} x {fixed}"
                )
        else:
            oi = int64s(f"field {name!r} offsets", offsets or (0, 0), n + 1)
        pr = None
        if present[1] > present[0]:
            if present[1] - present[0] != (n + 7) // 8:
                raise ColumnarFormatError(f"step {step}: field {name!r}: bad presence bitmap")
            pr = present
        columns.append((name, data, fixed, oi, pr))

    ints = np.concatenate(parts) if parts else np.empty(0, dtype="<i8")
    it = torch.from_numpy(ints)
    starts = np.cumsum([0] + [len(p) for p in parts])

    def part(i: int) -> torch.Tensor:
        return it[int(starts[i]) : int(starts[i + 1])]

    def check_offsets(what: str, off: torch.Tensor, size: int) -> None:
        if int(off[0]) != 0 or int(off[-1]) != size or bool((off[1:] < off[:-1]).any()):
            raise ColumnarFormatError(f"step {step}: {what}: offsets not from 0 up to {size}")

    key_offsets = part(ko)
    check_offsets("key_offsets", key_offsets, kb[1] - kb[0])
    out: dict[str, Column] = {}
    for name, data, fixed, oi, pr in columns:
        if name in out:
            raise ColumnarFormatError(f"step {step}: field {name!r} twice")
        t = _bytes_view(raw, *data)
        off = None
        if fixed is not None:
            t = t.view(n, fixed)
        else:
            assert oi is not None
            off = part(oi)
            check_offsets(f"field {name!r}", off, data[1] - data[0])
        present_t = None
        if pr is not None:
            bits = np.frombuffer(raw, dtype=np.uint8, count=pr[1] - pr[0], offset=pr[0])
            present_t = torch.from_numpy(np.unpackbits(bits, count=n, bitorder="little").view(bool))
        out[name] = Column(name, t, off, fixed, present_t)
    return ColumnarBatch(
        rank=rank,
        epoch=epoch,
        step=step,
        resume_token=token,
        shards=part(ids[0]),
        indices=part(ids[1]),
        key_bytes=_bytes_view(raw, *kb),
        key_offsets=key_offsets,
        columns=out,
    )
