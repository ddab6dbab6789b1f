"""Text pools: our shipped pool, files and URIs, and TextSpan's pool pinned to its published content (loopback HTTP)."""

import hashlib
import http.server
import shutil
import socket
import threading
import time
from pathlib import Path

import fsspec
import pytest

from ccs_ray import files
from ccs_ray.pools import (
    TEXTSPAN_GENERAL_BYTES,
    TEXTSPAN_GENERAL_FILE,
    TEXTSPAN_GENERAL_LINES,
    TEXTSPAN_GENERAL_SHA256,
    PoolError,
    cache_dir,
    check_pool,
    load_pool,
)

# The published file with its license, beside the repository: shared/fixtures/textspan-general.
PUBLISHED = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "textspan-general" / TEXTSPAN_GENERAL_FILE


@pytest.fixture(scope="module")
def published() -> bytes:
    if not PUBLISHED.exists():
        pytest.skip(f"the published textspan-general pool is not at {PUBLISHED}")
    return PUBLISHED.read_bytes()


class Server:
    """A real HTTP server on 127.0.0.1 serving ``body`` at every path and counting requests."""

    def __init__(self, body: bytes):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def do_HEAD(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()

            def log_message(self, *args):
                pass

        self.body, self.requests = body, 0
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/image_descriptions_general.txt"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def cache(monkeypatch, tmp_path) -> Path:
    """An empty ``$CCS_RAY_CACHE``; returns where the textspan-general pool is cached."""
    monkeypatch.setenv("CCS_RAY_CACHE", str(tmp_path / "cache"))
    return cache_dir() / TEXTSPAN_GENERAL_FILE


@pytest.fixture
def server(monkeypatch, cache, published):
    s = Server(published)
    monkeypatch.setenv("CCS_RAY_TEXTSPAN_GENERAL_URL", s.url)
    yield s
    s.close()


def copy_named(tmp_path: Path, folder: str, data: bytes) -> Path:
    """``data`` as ``<tmp>/<folder>/image_descriptions_general.txt``."""
    path = tmp_path / folder / TEXTSPAN_GENERAL_FILE
    path.parent.mkdir()
    path.write_bytes(data)
    return path


def test_ccs_basic_is_a_real_pool():
    pool = load_pool("ccs-basic")
    assert 300 <= len(pool) <= 500 and len(set(pool)) == len(pool)
    text = " ".join(pool).lower()
    for word in ["red", "circle", "striped", "three objects", "letter", "digit", "paris", "dogs", "painting",
                 "pizza", "car", "sunset", "wood", "lighting"]:
        assert word in text, word


def test_pool_from_path_and_memory_uri(tmp_path):
    (tmp_path / "p.txt").write_text("  A cat \n\nA dog\n")
    assert load_pool(str(tmp_path / "p.txt")) == ["A cat", "A dog"]
    with fsspec.open("memory://pools/p.txt", "wb") as f:
        f.write(b"One\nTwo\n")
    assert load_pool("memory://pools/p.txt") == ["One", "Two"]
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(PoolError, match="empty"):
        load_pool(str(tmp_path / "empty.txt"))
    with pytest.raises(PoolError, match="cannot be read.*alias"):
        load_pool(str(tmp_path / "missing.txt"))


def test_pin_is_the_published_file(published):
    assert hashlib.sha256(published).hexdigest() == TEXTSPAN_GENERAL_SHA256
    assert len(published) == TEXTSPAN_GENERAL_BYTES
    assert published.count(b"\n") == TEXTSPAN_GENERAL_LINES - 1 and not published.endswith(b"\n")


def test_published_file_by_path_and_file_uri(published, cache):
    for name in (str(PUBLISHED), PUBLISHED.as_uri()):
        pool = load_pool(name)
        assert len(pool) == TEXTSPAN_GENERAL_LINES and pool == load_pool(str(PUBLISHED))
    assert not cache.exists()  # a given file is used where it is


def test_changed_or_truncated_copy_is_refused(published, tmp_path):
    changed = bytearray(published)
    changed[1000] ^= 0x01
    truncated = published[:published.rindex(b"\n")]  # the last line lost
    for folder, data in (("changed", bytes(changed)), ("truncated", truncated)):
        path = copy_named(tmp_path, folder, data)
        for name in (str(path), path.as_uri()):
            with pytest.raises(PoolError) as e:
                load_pool(name)
            msg = str(e.value)
            assert name in msg and hashlib.sha256(data).hexdigest() in msg and TEXTSPAN_GENERAL_SHA256 in msg
            assert "download it again from https://" in msg
    (tmp_path / "other.txt").write_bytes(truncated)  # another name: any pool, not checked
    assert len(load_pool(str(tmp_path / "other.txt"))) == TEXTSPAN_GENERAL_LINES - 1


def test_textspan_general_downloads_once_then_verifies_the_cache(server, cache, published):
    pool = load_pool("textspan-general")
    assert len(pool) == TEXTSPAN_GENERAL_LINES and pool == load_pool(str(PUBLISHED))
    assert cache.read_bytes() == published and [p.name for p in cache.parent.iterdir()] == [TEXTSPAN_GENERAL_FILE]
    assert load_pool("textspan-general") == pool and server.requests == 1  # the second load is from the cache
    cache.write_bytes(published.replace(b"\n", b"\r\n", 1))
    with pytest.raises(PoolError, match=f"{cache} is not TextSpan's published.*expected {TEXTSPAN_GENERAL_SHA256}.*"
                                        f"delete it to download it again"):
        load_pool("textspan-general")


def test_download_of_other_content_is_refused_and_not_cached(server, cache, published):
    server.body = published + b"\n"
    with pytest.raises(PoolError, match=f"the download from {server.url} is not.*sha256 "
                                        f"{hashlib.sha256(server.body).hexdigest()}.*download it by hand"):
        load_pool("textspan-general")
    assert not cache.parent.exists()


def test_textspan_general_downloads_from_a_file_uri(monkeypatch, cache, published):
    monkeypatch.setenv("CCS_RAY_TEXTSPAN_GENERAL_URL", PUBLISHED.as_uri())
    assert len(load_pool("textspan-general")) == TEXTSPAN_GENERAL_LINES
    assert cache.read_bytes() == published


def test_textspan_general_offline_error(monkeypatch, cache):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CCS_RAY_TEXTSPAN_GENERAL_URL", f"http://127.0.0.1:{port}/pool.txt")
    with pytest.raises(PoolError, match='cannot download.*Offline.*spans.pool = "file:///path/to/'
                                        f'{TEXTSPAN_GENERAL_FILE}", or put it at {cache}'):
        load_pool("textspan-general")


def test_textspan_general_placed_by_hand(monkeypatch, cache, published):
    monkeypatch.setenv("CCS_RAY_TEXTSPAN_GENERAL_URL", "http://127.0.0.1:9/unused")
    cache.parent.mkdir(parents=True)
    shutil.copy(PUBLISHED, cache)
    assert len(load_pool("textspan-general")) == TEXTSPAN_GENERAL_LINES
    assert [p.name for p in cache.parent.iterdir()] == [TEXTSPAN_GENERAL_FILE]


def test_check_pool_passes_what_loads(tmp_path, server, cache):
    check_pool("ccs-basic")
    (tmp_path / "p.txt").write_text("A cat\n")
    check_pool(str(tmp_path / "p.txt"))
    check_pool((tmp_path / "p.txt").as_uri())
    check_pool("textspan-general")  # not cached, reachable: probed, not downloaded
    assert server.requests == 0 and not cache.exists()
    load_pool("textspan-general")
    server.close()
    check_pool("textspan-general")  # cached and verified: no network


def test_check_pool_refuses_what_does_not_load(tmp_path, published):
    with pytest.raises(PoolError, match="cannot be read"):
        check_pool(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(PoolError, match="empty"):
        check_pool(str(tmp_path / "empty.txt"))
    with pytest.raises(PoolError, match=TEXTSPAN_GENERAL_SHA256):
        check_pool(str(copy_named(tmp_path, "short", published[:-1])))


def test_check_pool_textspan_general_unreachable(monkeypatch, cache):
    monkeypatch.setenv("CCS_RAY_TEXTSPAN_GENERAL_URL", "http://127.0.0.1:9/image_descriptions_general.txt")
    t0 = time.monotonic()
    with pytest.raises(PoolError) as e:
        check_pool("textspan-general")
    assert time.monotonic() - t0 < files.PROBE_TIMEOUT_S + 1
    msg = str(e.value)
    assert "\n" not in msg and f"not cached at {cache}" in msg and "http://127.0.0.1:9/" in msg
    assert "Download it from https://" in msg and f'spans.pool = "file:///path/to/{TEXTSPAN_GENERAL_FILE}"' in msg


def test_check_pool_probe_is_bounded(monkeypatch, cache):
    """A server that accepts the connection but never answers: the probe gives up after PROBE_TIMEOUT_S."""
    monkeypatch.setattr(files, "PROBE_TIMEOUT_S", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody reads or answers
        monkeypatch.setenv("CCS_RAY_TEXTSPAN_GENERAL_URL", f"http://127.0.0.1:{silent.getsockname()[1]}/pool.txt")
        t0 = time.monotonic()
        with pytest.raises(PoolError, match="not reachable"):
            check_pool("textspan-general")
        assert time.monotonic() - t0 < 2
