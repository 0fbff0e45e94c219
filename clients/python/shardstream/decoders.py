"""Decoding sample fields by extension, WebDataset style, and a collate.

A field's extension is what follows the last dot of its name, lower-cased:
``"input.npy"`` is ``npy``, ``"cls"`` is ``cls``. :class:`Decoders` maps
extensions to functions of the field's bytes; fields with no decoder stay
``bytes``, and the identity entries (``__key__``, ``__shard__``,
``__index__``, any name starting with ``__``) are never touched.

Nothing here unpickles by default: ``pyd`` and ``pickle`` fields are refused
unless ``Decoders(pickle=True)``, since unpickling runs code from the data.
Images need Pillow, an optional extra (``pip install shardstream[image]``),
imported on the first image field.
"""

from __future__ import annotations

import io
import json
import pickle as _pickle
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Literal

import numpy as np
import torch

from shardstream.types import Sample

__all__ = ["RAW_DTYPES", "DecodeError", "Decoders", "collate"]

FieldDecoder = Callable[[bytes], Any]
"""A decoder: the field's bytes in, the decoded value out."""

RAW_DTYPES: Mapping[str, str] = {
    "i8": "<i1",
    "u8": "<u1",
    "i16": "<i2",
    "u16": "<u2",
    "i32": "<i4",
    "u32": "<u4",
    "i64": "<i8",
    "u64": "<u8",
    "f16": "<f2",
    "f32": "<f4",
    "f64": "<f8",
}
"""Raw little-endian arrays: extension to numpy dtype. A field ``x.u16``
holding ``2n`` bytes decodes to a 1-D array of ``n`` uint16."""

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
PICKLE_EXTENSIONS = ("pyd", "pickle")

_IMAGE_HINT = "decoding images needs Pillow: pip install shardstream[image]"


class DecodeError(ValueError):
    """A field could not be decoded; the message names the sample's key and
    the field."""

    def __init__(self, key: object, field: str, message: str) -> None:
        super().__init__(f"sample {key!r} field {field!r}: {message}")
        self.key = key
        self.field = field


class _PickleRefusedError(Exception):
    pass


def _npy(data: bytes) -> Any:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _json(data: bytes) -> Any:
    return json.loads(data)


def _int(data: bytes) -> int:
    return int(data.decode("ascii").strip())


def _text(data: bytes) -> str:
    return data.decode("utf-8")


def _raw(dtype: str, data: bytes) -> Any:
    dt = np.dtype(dtype)
    if len(data) % dt.itemsize:
        raise ValueError(f"{len(data)} bytes is not a whole number of {dt.name} ({dt.itemsize} B)")
    return np.frombuffer(data, dtype=dt).copy()  # writable, owned


def _refuse_pickle(data: bytes) -> Any:
    raise _PickleRefusedError


def _unpickle(data: bytes) -> Any:
    return _pickle.loads(data)


def _image(layout: str, mode: str | None, data: bytes) -> Any:
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError(_IMAGE_HINT) from e
    with Image.open(io.BytesIO(data)) as img:
        if mode is not None and img.mode != mode:
            img = img.convert(mode)
        a = np.asarray(img)
    if a.ndim == 2:
        a = a[:, :, None]  # one channel: always 3-D
    if layout == "CHW":
        a = a.transpose(2, 0, 1)
    return np.ascontiguousarray(a)


def _to_tensor(value: Any) -> Any:
    """numpy arrays become tensors where torch has the dtype (big-endian
    arrays are converted); others (strings, objects) stay arrays."""
    if not isinstance(value, np.ndarray):
        return value
    if not value.dtype.isnative:
        value = value.astype(value.dtype.newbyteorder("="))
    value = np.ascontiguousarray(value)
    if not value.flags.writeable:
        value = value.copy()  # torch wants to own writable memory
    try:
        return torch.from_numpy(value)
    except TypeError:
        return value


class Decoders:
    """Field decoders by extension.

    ===========================  ==============================================
    extension                    decoded to
    ===========================  ==============================================
    ``npy``                      ``numpy.load`` (``allow_pickle=False``)
    ``json``                     ``json.loads``
    ``cls``, ``cls2``, ``index`` ``int`` from ASCII digits
    ``txt``, ``text``            ``str`` (UTF-8)
    ``i8`` … ``u64``, ``f16``,   a 1-D little-endian array of that type
    ``f32``, ``f64``             (:data:`RAW_DTYPES`)
    ``tokens``                   the same, of ``token_dtype`` (``"i32"``)
    ``jpg``, ``jpeg``, ``png``,  a uint8 image, ``image_layout`` ``"CHW"``
    ``webp`` (and ``bmp``,       (default) or ``"HWC"``, in ``image_mode``
    ``gif``, ``tif``, ``tiff``)  (``"RGB"``; None keeps the file's mode);
                                 needs ``pip install shardstream[image]``
    ``pyd``, ``pickle``          refused, unless ``pickle=True``
    anything else                left as ``bytes``
    ===========================  ==============================================

    Arrays (npy, raw, tokens, images) are torch tensors with ``tensors=True``
    (the default), numpy arrays with ``False``; an npy array of a dtype torch
    lacks (strings) stays numpy. ``extra`` adds or replaces decoders by
    extension (``None`` keeps that extension's bytes); with DataLoader
    workers started with spawn its functions must be module-level (they are
    pickled).
    """

    def __init__(
        self,
        extra: Mapping[str, FieldDecoder | None] | None = None,
        *,
        tensors: bool = True,
        token_dtype: str = "i32",
        image_layout: Literal["CHW", "HWC"] = "CHW",
        image_mode: str | None = "RGB",
        pickle: bool = False,
    ) -> None:
        if token_dtype not in RAW_DTYPES:
            raise ValueError(f"token_dtype: {token_dtype!r}, want one of {sorted(RAW_DTYPES)}")
        if image_layout not in ("CHW", "HWC"):
            raise ValueError(f"image_layout: {image_layout!r}, want 'CHW' or 'HWC'")
        self.tensors = bool(tensors)
        self.token_dtype = token_dtype
        self.image_layout = image_layout
        self.image_mode = image_mode
        self.pickle = bool(pickle)
        table: dict[str, FieldDecoder | None] = {
            "npy": _npy,
            "json": _json,
            "cls": _int,
            "cls2": _int,
            "index": _int,
            "txt": _text,
            "text": _text,
            "tokens": partial(_raw, RAW_DTYPES[token_dtype]),
        }
        for ext, dtype in RAW_DTYPES.items():
            table[ext] = partial(_raw, dtype)
        for ext in IMAGE_EXTENSIONS:
            table[ext] = partial(_image, image_layout, image_mode)
        for ext in PICKLE_EXTENSIONS:
            table[ext] = _unpickle if self.pickle else _refuse_pickle
        for ext, fn in (extra or {}).items():
            if fn is not None and not callable(fn):
                raise TypeError(f"extra[{ext!r}]: {type(fn).__name__}, want a callable or None")
            table[ext.lower().lstrip(".")] = fn
        self.table = table

    def __repr__(self) -> str:
        return (
            f"Decoders(tensors={self.tensors}, token_dtype={self.token_dtype!r}, "
            f"image_layout={self.image_layout!r}, pickle={self.pickle})"
        )

    def decoder(self, field: str) -> FieldDecoder | None:
        """The decoder of a field name (by its extension), or None."""
        return self.table.get(field.rsplit(".", 1)[-1].lower())

    def field(self, key: object, name: str, data: Any) -> Any:
        """Decodes one field; ``key`` is the sample's, for the error."""
        fn = self.decoder(name)
        if fn is None or not isinstance(data, (bytes, bytearray, memoryview)):
            return data
        try:
            value = fn(bytes(data))
        except _PickleRefusedError:
            raise DecodeError(
                key,
                name,
                "pickle fields are not decoded by default (unpickling runs code "
                "from the data); use Decoders(pickle=True) for data you trust, "
                "or extra={'" + name.rsplit(".", 1)[-1].lower() + "': None} to keep the bytes",
            ) from None
        except ImportError as e:
            raise ImportError(f"sample {key!r} field {name!r}: {e}") from e
        except Exception as e:
            raise DecodeError(key, name, f"{type(e).__name__}: {e}") from e
        return _to_tensor(value) if self.tensors else value

    def __call__(self, sample: Sample) -> Sample:
        """A new sample dict with its fields decoded."""
        key = sample.get("__key__")
        return {
            name: value if name.startswith("__") else self.field(key, name, value)
            for name, value in sample.items()
        }


def _stackable(values: Sequence[Any]) -> bool:
    first = values[0]
    return all(
        type(v) is type(first) and v.shape == first.shape and v.dtype == first.dtype for v in values
    )


def collate(batch: Sequence[Any]) -> Any:
    """A decoded batch to tensors where shapes agree.

    A list of dicts with the same keys becomes a dict of collated values per
    key; tuples of one length, a tuple per position. Tensors (or numpy
    arrays) of one shape and dtype are stacked into one tensor; ``int``,
    ``float`` and ``bool`` values become a 1-D tensor (int64, float64,
    bool). Anything else (strings, bytes, arrays whose shapes differ, dicts
    whose keys differ) stays a list. The result of a :class:`Batch` is a
    plain dict: keep ``resume_token`` yourself if you need it.

    Usable as ``ShardStreamDataset(collate=...)`` (``collate=True`` is this
    function) or as ``DataLoader(ds, batch_size=None, collate_fn=collate)``.
    """
    values = list(batch)
    if not values:
        return values
    first = values[0]
    if isinstance(first, Mapping):
        keys = list(first)
        if all(isinstance(v, Mapping) and list(v) == keys for v in values):
            return {k: collate([v[k] for v in values]) for k in keys}
        return values
    if isinstance(first, tuple) and not hasattr(first, "_fields"):
        if all(isinstance(v, tuple) and len(v) == len(first) for v in values):
            return tuple(collate(list(col)) for col in zip(*values, strict=True))
        return values
    if isinstance(first, torch.Tensor) and _stackable(values):
        return torch.stack(values)
    if isinstance(first, np.ndarray) and _stackable(values):
        return _to_tensor(np.stack(values))
    for kind, dtype in ((bool, torch.bool), (int, torch.int64), (float, torch.float64)):
        if type(first) is kind and all(type(v) is kind for v in values):
            return torch.tensor(values, dtype=dtype)
    return values
