"""Broken inputs, written for real: each one is classified, good images still come through, counts add up."""

import http.server
import io
import struct
import tarfile
import threading
import zlib
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from ccs_ray.sources import load_shard, plan_shards
from ccs_ray.sources.decode import DecodeError, decode_image, to_rgb
from ccs_ray.spec import DataConfig
from ccs_ray.tables import read_table, write_table


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def rgb(seed: int, size=(40, 40)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def huge_png_header(width: int, height: int) -> bytes:
    """A valid-looking PNG whose IHDR claims width x height pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def corrupt_png() -> bytes:
    data = bytearray(encode(rgb(5), "PNG"))
    idat = data.index(b"IDAT")
    for i in range(idat + 20, idat + 60):
        data[i] ^= 0x5A
    return bytes(data)


def faults() -> dict[str, tuple[bytes, str | None]]:
    """file name -> (bytes, expected reason; None for a good image kept as is, ``converted:<mode>`` for one kept
    after a conversion to RGB from ``mode``)."""
    jpeg = encode(rgb(1), "JPEG", quality=90)
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 20, 40))  # left half fully transparent
    palette = Image.new("P", (40, 40), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.paste(0, (0, 0, 20, 40))  # left half: index 0, the transparent one
    return {
        "a_good.png": (encode(rgb(0), "PNG"), None),
        "b_good.jpg": (jpeg, None),
        "c_truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "d_truncated.png": (encode(rgb(2), "PNG")[:300], "truncated"),
        "e_empty.jpg": (b"", "empty"),
        "f_text.jpg": (b"this is a text file renamed to .jpg\n" * 4, "not_an_image"),
        "g_random.png": (bytes(np.random.default_rng(7).integers(1, 255, 600, dtype=np.uint8)), "not_an_image"),
        "h_bomb.png": (huge_png_header(100_000, 100_000), "decompression_bomb"),
        "i_corrupt.png": (corrupt_png(), "corrupt"),
        "j_gray.png": (encode(rgb(3).convert("L"), "PNG"), "converted:L"),
        "k_cmyk.jpg": (encode(rgb(4).convert("CMYK"), "JPEG"), "converted:CMYK"),
        "l_rgba.png": (encode(rgba, "PNG"), "converted:RGBA"),
        "m_palette.png": (encode(palette, "PNG", transparency=0), "converted:P"),
    }


def test_every_fault_is_classified_and_good_images_survive(tmp_path, tiny_model):
    _, preprocess = tiny_model
    cases = faults()
    for name, (data, _) in cases.items():
        (tmp_path / name).write_bytes(data)
    (shard,) = plan_shards(DataConfig(source=str(tmp_path), shard_size=100))
    loaded = load_shard(shard, preprocess)

    kept = [n for n, (_, r) in cases.items() if r is None or r.startswith("converted:")]
    reasons = {e["item"].rsplit("/", 1)[-1]: e["reason"] for e in loaded.errors}
    assert reasons == {n: r for n, (_, r) in cases.items() if n not in kept}
    assert all(e["stage"] == "decode" and e["source"] == str(tmp_path) and e["detail"] for e in loaded.errors)
    modes = {c["item"].rsplit("/", 1)[-1]: c["from_mode"] for c in loaded.conversions}
    assert modes == {n: r.removeprefix("converted:") for n, (_, r) in cases.items() if r and n in kept}
    assert [i.rsplit("/", 1)[-1] for i in loaded.items] == kept
    assert loaded.images.shape == (len(kept), 3, 32, 32)
    assert loaded.n_converted == 4
    assert loaded.n_failed == len(cases) - len(kept)
    expected_good = preprocess(Image.open(io.BytesIO(cases["a_good.png"][0])))
    torch.testing.assert_close(loaded.images[0], expected_good, rtol=0, atol=0)

    write_table(str(tmp_path / "results"), "errors", loaded.errors, run_id="r1", model="ccs-tiny/none")
    table = read_table(str(tmp_path / "results"), "errors").to_pylist()
    assert Counter(r["reason"] for r in table) == Counter(r for n, (_, r) in cases.items() if n not in kept)


def test_conversions_to_rgb():
    """An image in another mode is decoded in its own mode and converted as open_clip converts it (PIL's RGB
    conversion: alpha dropped, 16-bit values clipped at 255), or composited over a colour with ``alpha``; each
    conversion is described for the conversions table."""
    data = faults()
    image, conversion = decode_image(data["l_rgba.png"][0])
    assert image.mode == "RGBA" and conversion == {"from_mode": "RGBA", "alpha": "dropped"}
    arr = np.asarray(to_rgb(image, "drop"))
    assert (arr[:, 20:] == [255, 0, 0]).all()
    assert (arr[:, :20] == np.asarray(image)[:, :20, :3]).all()  # the transparent half's colour, alpha dropped
    image, conversion = decode_image(data["l_rgba.png"][0], "white")
    arr = np.asarray(to_rgb(image, "white"))
    assert (arr[:, :20] == 255).all() and (arr[:, 20:] == [255, 0, 0]).all()  # transparent half over white
    image, conversion = decode_image(data["m_palette.png"][0], "white")
    arr = np.asarray(to_rgb(image, "white"))
    assert conversion["from_mode"] == "P" and (arr[:, :20] == 255).all() and (arr[:, 20:] == [0, 255, 0]).all()
    gray = rgb(3).convert("L")
    image, conversion = decode_image(data["j_gray.png"][0])
    assert conversion["from_mode"] == "L" and (np.asarray(to_rgb(image, "drop"))[..., 1] == np.asarray(gray)).all()
    sixteen = Image.fromarray(np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * 40)
    image, conversion = decode_image(encode(sixteen, "PNG"))
    clipped = np.minimum(np.asarray(sixteen), 255)
    assert conversion["from_mode"].startswith("I") and (np.asarray(to_rgb(image, "drop"))[..., 0] == clipped).all()


def test_decompression_bomb_warning_is_an_error_too(monkeypatch):
    big = encode(rgb(0, size=(100, 100)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6_000)  # 10,000 px: over the limit, under twice it -> warning
    with pytest.raises(DecodeError) as e, pytest.warns(Image.DecompressionBombWarning):  # PIL alone only warns
        decode_image(big)
    assert e.value.reason == "decompression_bomb"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4_000)  # over twice the limit -> PIL's error
    with pytest.raises(DecodeError, match="decompression_bomb"):
        decode_image(big)


def test_missing_file_in_a_manifest(tmp_path, tiny_model):
    _, preprocess = tiny_model
    (tmp_path / "a.png").write_bytes(encode(rgb(0), "PNG"))
    (tmp_path / "m.csv").write_text("uri,label\na.png,x\nmissing.png,y\n")
    (shard,) = plan_shards(DataConfig(source=str(tmp_path / "m.csv")))
    loaded = load_shard(shard, preprocess)
    assert loaded.labels == ["x"] and len(loaded.images) == 1
    assert [(e["item"], e["reason"]) for e in loaded.errors] == [(str(tmp_path / "missing.png"), "unreadable")]
    assert "FileNotFoundError" in loaded.errors[0]["detail"]


def tar_bytes(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return buf.getvalue()


def test_unreadable_tar_members_and_broken_tars(tmp_path, tiny_model):
    _, preprocess = tiny_model
    good = encode(rgb(0), "PNG")
    link = tarfile.TarInfo("b.jpg")
    link.type, link.linkname = tarfile.SYMTYPE, "elsewhere.jpg"
    (tmp_path / "0.tar").write_bytes(tar_bytes([("a.png", good), ("a.cls", b"3"), link, ("c.json", b"{}"),
                                                 ("d.png", b""), ("e.png", good)]))
    two = tar_bytes([("f.png", good), ("g.png", encode(rgb(1), "PNG"))])
    g_data = 512 + -(-len(good) // 512) * 512 + 512  # f's header and padded data, g's header
    (tmp_path / "1.tar").write_bytes(two[: g_data + 100])  # ends inside g.png's data
    (tmp_path / "2.tar").write_bytes(two[: g_data - 200])  # ends inside g.png's header
    (tmp_path / "3.tar").write_bytes(two[: g_data - 512])  # ends where g.png's header should start
    (tmp_path / "4.tar").write_bytes(b"not a tar at all" * 100)

    shards = plan_shards(DataConfig(source=str(tmp_path)))
    assert [s.kind for s in shards] == ["tar"] * 5
    loaded = [load_shard(s, preprocess) for s in shards]
    rows = [[(e["item"].rsplit("#", 1)[-1], e["reason"]) for e in x.errors] for x in loaded]
    assert rows[0] == [("b.jpg", "unreadable"), ("c", "unreadable"), ("d.png", "empty")]  # c has no image member
    assert [x.rsplit("#")[-1] for x in loaded[0].items] == ["a.png", "e.png"] and loaded[0].labels == ["3", None]
    assert rows[1] == [("g.png", "unreadable")]
    assert rows[2] == rows[3] == [("*", "unreadable")] and "truncated tar" in loaded[2].errors[0]["detail"]
    assert [[x.rsplit("#")[-1] for x in loaded[i].items] for i in (1, 2, 3)] == [["f.png"]] * 3
    assert rows[4] == [("*", "unreadable")] and loaded[4].images.shape == (0, 3, 32, 32)
    assert Counter(e["reason"] for x in loaded for e in x.errors) == {"unreadable": 6, "empty": 1}


def test_http_manifest_keeps_going_past_http_errors(tmp_path, tiny_model):
    """Image URIs served by a real loopback HTTP server: 404 and 500 are 'unreadable', the rest comes through."""
    _, preprocess = tiny_model
    good = encode(rgb(0), "PNG")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            status, body = {"/good.png": (200, good), "/gone.png": (404, b"")}.get(self.path, (500, b"boom"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_port}"
        (tmp_path / "m.csv").write_text(f"uri\n{base}/gone.png\n{base}/error.png\n{base}/good.png\n")
        (shard,) = plan_shards(DataConfig(source=str(tmp_path / "m.csv")))
        loaded = load_shard(shard, preprocess)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert loaded.items == [f"{base}/good.png"]
    torch.testing.assert_close(loaded.images[0], preprocess(Image.open(io.BytesIO(good))), rtol=0, atol=0)
    assert [(e["item"].rsplit("/", 1)[-1], e["reason"]) for e in loaded.errors] == [
        ("gone.png", "unreadable"), ("error.png", "unreadable")]
