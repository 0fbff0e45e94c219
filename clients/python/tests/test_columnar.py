"""Columnar batches against the real server: the tensors hold exactly the
bytes the sample-dict view holds, for fields that are fixed-size, of varying
size, empty or missing in some samples; DataLoader workers pass them through
shared memory; pin_memory pins every tensor."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import shardstream
from shardstream._columnar import ColumnarFormatError, parse_response
from shardstream.v1 import shardstream_pb2 as pb
from shardstream.v1 import shardstream_pb2_grpc as pb_grpc
from tests.conftest import pack, workers_kw
from tests.servertest import Server

SAMPLES = 301
TOKENS = 64  # bytes of every sample's "tokens" field: 16 int32


def files(i: int) -> dict[str, bytes]:
    """Sample i's fields: ``tokens`` fixed-size, ``cls`` of varying size,
    ``opt`` missing in every third sample and empty in every fifth,
    ``empty`` empty everywhere."""
    rng = random.Random(i)
    out = {
        "tokens": np.arange(i, i + TOKENS // 4, dtype="<i4").tobytes(),
        "cls": str(i).encode(),
        "empty": b"",
    }
    if i % 3:
        out["opt"] = b"" if i % 5 == 0 else rng.randbytes(rng.randrange(1, 100))
    return out


@pytest.fixture(scope="module")
def columnar_server(
    shardstream_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("columnar")
    src = root / "files"
    src.mkdir()
    for i in range(SAMPLES):
        for name, data in files(i).items():
            (src / f"{i:06d}.{name}").write_bytes(data)
    pack(shardstream_bin, src, str(root / "ds"), shard_size="8KiB", extra=("--chunk-size", "4KiB"))
    s = Server(shardstream_bin, str(root / "ds"), log=root / "serve.log")
    s.start()
    yield s
    s.stop()


KW: dict[str, Any] = {"seed": 4, "batch_size": 24, "last_batch": "pad"}


def check_columns(cb: shardstream.ColumnarBatch, want: shardstream.Batch) -> None:
    """cb's tensors hold what the dict batch want holds."""
    assert (cb.rank, cb.epoch, cb.step, cb.resume_token) == (
        want.rank,
        want.epoch,
        want.step,
        want.resume_token,
    )
    n = len(want)
    assert len(cb) == n
    assert cb.shards.dtype == torch.int64
    assert cb.shards.tolist() == [s["__shard__"] for s in want]
    assert cb.indices.tolist() == [s["__index__"] for s in want]
    assert cb.keys() == [s["__key__"] for s in want]
    # The fixed-size field: a [B, size] uint8 view, as int32 a [B, 16] one.
    tok = cb["tokens"]
    assert tok.fixed_size == TOKENS
    assert tok.offsets is None
    assert tok.present is None
    assert tok.data.dtype == torch.uint8
    assert tok.data.shape == (n, TOKENS)
    as_int = tok.data.view(torch.int32)
    assert as_int.shape == (n, TOKENS // 4)
    for i, s in enumerate(want):
        assert tok.data[i].numpy().tobytes() == s["tokens"]
        assert as_int[i, 0].item() == int(s["cls"])
    # A field of varying size: the flat buffer and n+1 offsets.
    cls = cb["cls"]
    assert cls.fixed_size is None
    assert cls.offsets is not None
    assert cls.offsets.shape == (n + 1,)
    flat = cls.data.numpy().tobytes()
    off = cls.offsets.tolist()
    assert [flat[off[i] : off[i + 1]] for i in range(n)] == [s["cls"] for s in want]
    # Empty everywhere: fixed size 0.
    assert cb["empty"].fixed_size == 0
    assert cb["empty"].data.shape == (n, 0)
    # Missing in some samples: the presence mask, empty ranges where missing.
    if "opt" in cb:
        opt = cb["opt"]
        has = [("opt" in s) for s in want]
        if all(has):
            assert opt.present is None
        else:
            assert opt.present is not None
            assert opt.present.tolist() == has
        for i, s in enumerate(want):
            assert opt.value(i) == s.get("opt")
    else:
        assert not any("opt" in s for s in want)
    # The dict view gives the same dicts back.
    assert cb.samples() == want
    assert cb.nbytes == sum(len(v) for s in want for k, v in s.items() if not k.startswith("__"))


def test_columnar_equals_dict_view(columnar_server: Server) -> None:
    for rank in range(2):
        want = list(
            shardstream.ShardStreamDataset(columnar_server.address, rank=rank, world_size=2, **KW)
        )
        ds = shardstream.ShardStreamDataset(
            columnar_server.address, rank=rank, world_size=2, columnar=True, **KW
        )
        got = list(ds)
        assert len(got) == len(want) > 3
        for cb, b in zip(got, want, strict=True):
            assert isinstance(cb, shardstream.ColumnarBatch)
            check_columns(cb, b)
        assert ds.stats.bytes == sum(b.nbytes for b in got)
        # A stored token resumes the same way in either form.
        assert ds.state_dict()["resume_token"] == want[-1].resume_token


def raw_responses(address: str, req: pb.StreamBatchesRequest) -> list[bytes]:
    with grpc.insecure_channel(address) as ch:
        call: Any = ch.unary_stream(
            "/shardstream.v1.LoaderService/StreamBatches",
            request_serializer=pb.StreamBatchesRequest.SerializeToString,
        )
        return list(call(req, timeout=30))


def test_parser_agrees_with_protobuf(columnar_server: Server) -> None:
    """The hand-written parser reads what protobuf reads from the same bytes."""
    ds = shardstream.ShardStreamDataset(columnar_server.address, **KW)
    job = ds.job(1)
    raws = raw_responses(columnar_server.address, pb.StreamBatchesRequest(job=job, columnar=True))
    assert raws
    for raw in raws:
        m = pb.StreamBatchesResponse.FromString(raw).batch
        cb = parse_response(raw)
        c = m.columns
        assert (cb.rank, cb.epoch, cb.step, cb.resume_token) == (
            m.rank,
            m.epoch,
            m.step,
            m.resume_token,
        )
        assert len(cb) == c.count
        assert cb.shards.numpy().tobytes() == c.shards
        assert cb.indices.numpy().tobytes() == c.indices
        assert cb.key_bytes.numpy().tobytes() == c.keys
        assert cb.key_offsets.numpy().tobytes() == c.key_offsets
        assert list(cb.columns) == [f.name for f in c.fields]
        for f in c.fields:
            col = cb[f.name]
            assert col.data.numpy().tobytes() == f.data
            assert col.fixed_size == (f.fixed_size if f.HasField("fixed_size") else None)
            assert (col.offsets.numpy().tobytes() if col.offsets is not None else b"") == f.offsets
            if f.present:
                assert col.present is not None
                assert np.packbits(col.present.numpy(), bitorder="little").tobytes() == f.present
            else:
                assert col.present is None


def test_parser_refuses_per_sample_batches(columnar_server: Server) -> None:
    """An old server ignores columnar and sends samples: a clear error."""
    ds = shardstream.ShardStreamDataset(columnar_server.address, **KW)
    raws = raw_responses(
        columnar_server.address, pb.StreamBatchesRequest(job=ds.job(1), max_steps=1)
    )
    with pytest.raises(ColumnarFormatError, match="predates columnar"):
        parse_response(raws[0])
    m = pb.StreamBatchesResponse.FromString(
        raw_responses(
            columnar_server.address,
            pb.StreamBatchesRequest(job=ds.job(1), max_steps=1, columnar=True),
        )[0]
    )
    m.batch.columns.fields[0].offsets = b"\0" * 3  # a bad offsets array
    m.batch.columns.fields[0].ClearField("fixed_size")
    with pytest.raises(ColumnarFormatError, match="offsets"):
        parse_response(m.SerializeToString())
    assert pb_grpc  # the generated stubs stay importable next to the raw call


def steps_and_ids(items: list[shardstream.ColumnarBatch]) -> list[tuple[int, list[int], list[int]]]:
    return [(b.step, b.shards.tolist(), b.indices.tolist()) for b in items]


def test_columnar_num_workers(columnar_server: Server) -> None:
    """Two DataLoader workers give the batches of none, in order; their
    tensors arrive through shared memory."""

    def ds() -> shardstream.ShardStreamDataset:
        return shardstream.ShardStreamDataset(columnar_server.address, columnar=True, **KW)

    want = list(DataLoader(ds(), batch_size=None))
    got = list(DataLoader(ds(), batch_size=None, **workers_kw(2)))
    assert steps_and_ids(got) == steps_and_ids(want)
    dicts = list(shardstream.ShardStreamDataset(columnar_server.address, **KW))
    for cb, b in zip(got, dicts, strict=True):
        check_columns(cb, b)
    assert got[0]["tokens"].data.is_shared()  # moved through shared memory, not pickled


def pinning_unavailable() -> str | None:
    """Why torch cannot pin memory here, in torch's words, or None."""
    try:
        torch.empty(1).pin_memory()
    except RuntimeError as e:
        return str(e)
    return None


def test_columnar_pin_memory(columnar_server: Server) -> None:
    ds = shardstream.ShardStreamDataset(columnar_server.address, columnar=True, **KW)
    why = pinning_unavailable()
    if why is not None:
        # What DataLoader does with pin_memory=True is still checked: it
        # calls ColumnarBatch.pin_memory, found by torch's own pin_memory.
        from torch.utils.data._utils.pin_memory import pin_memory

        cb = next(iter(ds))
        mapped = cb._map(lambda t: t.clone())
        assert torch.equal(mapped["tokens"].data, cb["tokens"].data)
        with pytest.raises(RuntimeError):
            pin_memory(cb)  # type: ignore[no-untyped-call]
        pytest.skip(f"torch cannot pin memory on this machine: {why}")
    for cb in DataLoader(ds, batch_size=None, pin_memory=True, **workers_kw(2)):
        assert isinstance(cb, shardstream.ColumnarBatch)
        tensors = [cb.shards, cb.indices, cb.key_bytes, cb.key_offsets]
        for c in cb.columns.values():
            tensors += [t for t in (c.data, c.offsets, c.present) if t is not None]
        assert all(t.is_pinned() for t in tensors)
