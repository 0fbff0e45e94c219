"""decode="auto" / Decoders, transform= and collate: unit tests for each
decoder, then end to end against the real server (0 and 2 DataLoader
workers)."""

from __future__ import annotations

import builtins
import io
import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import shardstream
from shardstream import Batch, DecodeError, Decoders, collate
from tests.conftest import pack, workers_kw
from tests.servertest import Server


def npy(a: np.ndarray[Any, Any]) -> bytes:
    f = io.BytesIO()
    np.save(f, a)
    return f.getvalue()


def sample(key: str = "k1", /, **fields: Any) -> dict[str, Any]:
    return {"__key__": key, "__shard__": 0, "__index__": 1, **fields}


# ---- each decoder ------------------------------------------------------


def test_npy() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = Decoders()(sample(**{"x.npy": npy(a)}))["x.npy"]
    assert isinstance(got, torch.Tensor)
    assert got.dtype == torch.float32
    assert torch.equal(got, torch.from_numpy(a))
    as_np = Decoders(tensors=False)(sample(**{"x.npy": npy(a)}))["x.npy"]
    assert isinstance(as_np, np.ndarray)
    np.testing.assert_array_equal(as_np, a)


def test_npy_never_unpickles() -> None:
    obj = np.array([{"a": 1}], dtype=object)
    with pytest.raises(DecodeError, match=r"sample 'k1' field 'x\.npy'.*pickle"):
        Decoders()(sample(**{"x.npy": npy(obj)}))


def test_json_cls_text() -> None:
    got = Decoders()(
        sample(
            **{
                "meta.json": b'{"a": [1, 2]}',
                "cls": b"7\n",
                "cls2": b"12",
                "index": b" 3 ",
                "txt": "héllo".encode(),
                "caption.text": b"t",
            }
        )
    )
    assert got["meta.json"] == {"a": [1, 2]}
    assert (got["cls"], got["cls2"], got["index"]) == (7, 12, 3)
    assert (got["txt"], got["caption.text"]) == ("héllo", "t")
    assert (got["__key__"], got["__shard__"], got["__index__"]) == ("k1", 0, 1)


@pytest.mark.parametrize(
    ("ext", "dtype"),
    [("u16", torch.uint16), ("i32", torch.int32), ("i64", torch.int64), ("f32", torch.float32)],
)
def test_raw_arrays(ext: str, dtype: torch.dtype) -> None:
    want = torch.tensor([1, 2, 300], dtype=dtype)
    data = want.numpy().astype(shardstream.RAW_DTYPES[ext]).tobytes()
    got = Decoders()(sample(**{f"ids.{ext}": data}))[f"ids.{ext}"]
    assert got.dtype == dtype
    assert torch.equal(got, want)


def test_tokens_dtype() -> None:
    ids = np.array([5, 65535, 0], dtype="<u2")
    got = Decoders(token_dtype="u16")(sample(tokens=ids.tobytes()))["tokens"]
    assert got.dtype == torch.uint16
    assert got.tolist() == [5, 65535, 0]
    default = Decoders()(sample(tokens=np.array([1, -1], dtype="<i4").tobytes()))["tokens"]
    assert default.tolist() == [1, -1]
    with pytest.raises(DecodeError, match=r"sample 'k1' field 'tokens'.*whole number"):
        Decoders()(sample(tokens=b"\x00\x01\x02"))
    with pytest.raises(ValueError, match="token_dtype"):
        Decoders(token_dtype="int9")


def test_unknown_extensions_stay_bytes() -> None:
    s = sample(**{"x.bin": b"\x00\x01", "seg": b"raw"})
    assert Decoders()(s) == s
    custom = Decoders({"seg": bytes.upper, "txt": None})(sample(seg=b"raw", txt=b"keep"))
    assert (custom["seg"], custom["txt"]) == (b"RAW", b"keep")


def test_errors_name_key_and_field() -> None:
    with pytest.raises(DecodeError, match=r"sample 'abc' field 'cls': ValueError") as e:
        Decoders()(sample("abc", cls=b"seven"))
    assert (e.value.key, e.value.field) == ("abc", "cls")
    with pytest.raises(DecodeError, match=r"sample 'abc' field 'm\.json': JSONDecodeError"):
        Decoders()(sample("abc", **{"m.json": b"{"}))


def test_pickle_refused_by_default() -> None:
    data = pickle.dumps({"a": 1})
    for name in ("obj.pyd", "pickle"):
        with pytest.raises(DecodeError, match=rf"sample 'k1' field '{name}': pickle.*pickle=True"):
            Decoders()(sample(**{name: data}))
    with pytest.raises(DecodeError, match="pickle=True"):
        shardstream.ShardStreamDataset("127.0.0.1:1", batch_size=1, decode="auto")._process(
            Batch([sample(pyd=data)], rank=0, epoch=0, step=0, resume_token="t")
        )
    assert Decoders(pickle=True)(sample(**{"obj.pyd": data}))["obj.pyd"] == {"a": 1}
    assert Decoders({"pyd": None})(sample(pyd=data))["pyd"] == data


def png(mode: str, size: tuple[int, int]) -> bytes:
    from PIL import Image

    f = io.BytesIO()
    Image.new(mode, size, color=(10, 20, 30) if mode == "RGB" else 40).save(f, format="PNG")
    return f.getvalue()


def test_images() -> None:
    pytest.importorskip("PIL", reason="the image extra is not installed")  # make venv installs it
    img = png("RGB", (5, 3))
    chw = Decoders()(sample(**{"img.png": img}))["img.png"]
    assert chw.dtype == torch.uint8
    assert chw.shape == (3, 3, 5)
    assert chw[:, 0, 0].tolist() == [10, 20, 30]
    hwc = Decoders(image_layout="HWC")(sample(jpg=img))["jpg"]  # Pillow reads by content
    assert hwc.shape == (3, 5, 3)
    gray = png("L", (4, 2))
    assert Decoders()(sample(png=gray))["png"].shape == (3, 2, 4)  # converted to RGB
    assert Decoders(image_mode=None)(sample(png=gray))["png"].shape == (1, 2, 4)


def test_images_without_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_pil(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "PIL" or name.startswith("PIL."):
            raise ImportError("No module named 'PIL'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pil)
    with pytest.raises(ImportError, match=r"field 'x\.jpg'.*pip install shardstream\[image\]"):
        Decoders()(sample(**{"x.jpg": b"\xff\xd8"}))


def test_decoders_pickle() -> None:
    # DataLoader workers started with spawn get a pickled copy.
    d = pickle.loads(pickle.dumps(Decoders(token_dtype="u16")))
    assert d(sample(tokens=b"\x01\x00"))["tokens"].tolist() == [1]


# ---- the dataset's pipeline --------------------------------------------


def batch(*samples: dict[str, Any]) -> Batch:
    return Batch(list(samples), rank=0, epoch=2, step=5, resume_token="tok")


def make(**kw: Any) -> shardstream.ShardStreamDataset:
    return shardstream.ShardStreamDataset("127.0.0.1:1", batch_size=2, **kw)


def test_transform_runs_after_decoding() -> None:
    seen: list[Any] = []

    def transform(s: dict[str, Any]) -> dict[str, Any]:
        seen.append(s["cls"])
        return {"y": s["cls"] * 2}

    out = make(decode="auto", transform=transform)._process(batch(sample(cls=b"3")))
    assert seen == [3]  # an int: decoded before the transform
    assert isinstance(out, Batch)
    assert list(out) == [{"y": 6}]
    assert (out.step, out.resume_token) == (5, "tok")
    # Without decode the transform sees the bytes.
    raw = make(transform=transform)._process(batch(sample(cls=b"3")))
    assert list(raw) == [{"y": b"33"}]


def test_collate_option() -> None:
    b = batch(sample("a", cls=b"1"), sample("b", cls=b"2"))
    out = make(decode="auto", collate=True)._process(b)
    assert out["__key__"] == ["a", "b"]
    assert torch.equal(out["cls"], torch.tensor([1, 2]))
    assert make(decode="auto", collate=len)._process(b) == 2


def test_decode_callable_unchanged() -> None:
    b = batch(sample(cls=b"1"))
    assert make(decode=lambda x: ("whole", x))._process(b) == ("whole", b)
    assert make()._process(b) is b


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"decode": "yes"}, ValueError, "decode"),
        ({"decode": 3}, TypeError, "decode"),
        ({"transform": 3}, TypeError, "transform"),
        ({"collate": "yes"}, TypeError, "collate"),
        ({"decode": len, "transform": len}, ValueError, "callable decodes the whole batch"),
        ({"decode": len, "collate": True}, ValueError, "callable decodes the whole batch"),
        ({"decode": "auto", "columnar": True}, ValueError, "columnar"),
        ({"transform": len, "columnar": True}, ValueError, "columnar"),
    ],
)
def test_bad_pipeline(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make(**kwargs)


def tokens_only(s: dict[str, Any]) -> dict[str, Any]:
    return {"tokens": s["tokens"]}


def test_dataset_with_decoders_pickles() -> None:
    ds = make(decode=Decoders(token_dtype="u16"), transform=tokens_only, collate=True)
    again = pickle.loads(pickle.dumps(ds))
    out = again._process(batch(sample(tokens=b"\x01\x00", cls=b"4")))
    assert out["tokens"].tolist() == [[1]]


# ---- collate -----------------------------------------------------------


def test_collate_shapes() -> None:
    out = collate(
        [
            {"x": torch.zeros(2, 3), "n": np.ones(4), "y": 1, "f": 0.5, "b": True, "s": "a",
             "v": torch.zeros(2), "raw": b"1"},
            {"x": torch.ones(2, 3), "n": np.ones(4), "y": 2, "f": 1.5, "b": False, "s": "b",
             "v": torch.zeros(3), "raw": b"2"},
        ]
    )  # fmt: skip
    assert out["x"].shape == (2, 2, 3)
    assert isinstance(out["n"], torch.Tensor)
    assert out["n"].shape == (2, 4)
    assert out["y"].dtype == torch.int64
    assert out["f"].dtype == torch.float64
    assert out["b"].tolist() == [True, False]
    assert out["s"] == ["a", "b"]
    assert isinstance(out["v"], list)  # shapes differ: a list
    assert [t.shape for t in out["v"]] == [(2,), (3,)]
    assert out["raw"] == [b"1", b"2"]


def test_collate_tuples_and_mismatches() -> None:
    x, y = collate([(torch.zeros(2), 1), (torch.ones(2), 0)])
    assert x.shape == (2, 2)
    assert y.tolist() == [1, 0]
    mixed = [{"a": 1}, {"b": 2}]
    assert collate(mixed) == mixed  # keys differ
    assert collate([torch.zeros(2, dtype=torch.int32), torch.zeros(2)]) is not None
    assert isinstance(collate([torch.zeros(2, dtype=torch.int32), torch.zeros(2)]), list)
    assert collate([]) == []
    assert collate([1, "a"]) == [1, "a"]


# ---- end to end ---------------------------------------------------------

N = 40


def transform(s: dict[str, Any]) -> dict[str, Any]:
    """Module level: DataLoader workers may get it through a pickle."""
    return {
        "key": s["__key__"],
        "x": s["x.npy"] * 2,
        "tokens": s["tokens"],
        "label": s["cls"],
        "caption": s["txt"],
        "meta": s["meta.json"]["i"],
    }


def files_of(i: int) -> dict[str, bytes]:
    n = 3 + i % 4  # tokens of varying length: collated as a list
    return {
        "x.npy": npy(np.full((2, 2), i, dtype=np.int64)),
        "tokens": np.arange(n, dtype="<i4").tobytes(),
        "cls": str(i % 10).encode(),
        "txt": f"sample {i}".encode(),
        "meta.json": json.dumps({"i": i}).encode(),
        "extra.bin": bytes([i]),
    }


@pytest.fixture(scope="module")
def decode_server(
    shardstream_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("decode")
    files, out = root / "files", root / "dataset"
    files.mkdir()
    for i in range(N):
        for name, data in files_of(i).items():
            (files / f"{i:06d}.{name}").write_bytes(data)
    pack(shardstream_bin, files, str(out), shard_size="4KiB")
    with Server(shardstream_bin, str(out), log=root / "serve.log") as s:
        yield s


def check_sample(s: dict[str, Any]) -> int:
    i = int(s["__key__"])
    assert torch.equal(s["x.npy"], torch.full((2, 2), i, dtype=torch.int64))
    assert s["tokens"].dtype == torch.int32
    assert s["tokens"].tolist() == list(range(3 + i % 4))
    assert (s["cls"], s["txt"], s["meta.json"]) == (i % 10, f"sample {i}", {"i": i})
    assert s["extra.bin"] == bytes([i])  # unknown extension: bytes
    return i


def test_end_to_end_auto(decode_server: Server) -> None:
    ds = shardstream.ShardStreamDataset(decode_server.address, batch_size=4, decode="auto")
    seen = [check_sample(s) for b in DataLoader(ds, batch_size=None) for s in b]
    assert sorted(seen) == list(range(N))


def test_end_to_end_transform_collate_workers(decode_server: Server) -> None:
    def ds() -> shardstream.ShardStreamDataset:
        return shardstream.ShardStreamDataset(
            decode_server.address, seed=3, batch_size=4, decode="auto", transform=transform,
            collate=True,
        )  # fmt: skip

    want = list(DataLoader(ds(), batch_size=None))
    got = list(DataLoader(ds(), batch_size=None, **workers_kw(2)))
    assert len(got) == len(want) == N // 4
    keys = []
    for g, w in zip(got, want, strict=True):
        assert g["key"] == w["key"]
        assert g["x"].shape == (4, 2, 2)
        assert g["label"].dtype == torch.int64
        assert torch.equal(g["x"], w["x"])
        idx = [int(k) for k in g["key"]]
        assert torch.equal(g["x"][:, 0, 0], torch.tensor(idx) * 2)
        assert g["meta"].tolist() == idx
        assert g["caption"] == [f"sample {i}" for i in idx]
        assert isinstance(g["tokens"], list) or g["tokens"].shape[0] == 4
        keys += idx
    assert sorted(keys) == list(range(N))


def test_collate_as_collate_fn(decode_server: Server) -> None:
    ds = shardstream.ShardStreamDataset(decode_server.address, batch_size=5, decode="auto")
    for b in DataLoader(ds, batch_size=None, collate_fn=collate):
        assert b["cls"].shape == (5,)
        assert b["x.npy"].shape == (5, 2, 2)


def test_loader_spawn_workers_keep_the_token(decode_server: Server) -> None:
    # ShardStreamLoader (spawn workers): decode, transform and collate run in
    # the workers, and the main process still records each batch's token.
    ds = shardstream.ShardStreamDataset(
        decode_server.address, batch_size=8, decode="auto", transform=transform, collate=True
    )
    loader = shardstream.ShardStreamLoader(ds, num_workers=2)
    tokens = []
    keys: list[int] = []
    for b in loader:
        assert b["x"].shape == (8, 2, 2)
        keys += [int(k) for k in b["key"]]
        tokens.append(ds.state_dict()["resume_token"])
    assert sorted(keys) == list(range(N))
    assert len(set(tokens)) == N // 8
    assert all(tokens)
