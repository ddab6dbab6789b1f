"""Text pools: our shipped pool, files and URIs, and the downloaded, pinned TextSpan pool (loopback HTTP)."""

import hashlib
import http.server
import socket
import threading

import fsspec
import pytest

from ccs_ray.pools import TEXTSPAN_GENERAL_LINES, PoolError, cache_dir, load_pool

GENERAL = "".join(f"Description number {i}\n" for i in range(TEXTSPAN_GENERAL_LINES)).encode()


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
def server(monkeypatch, tmp_path):
    monkeypatch.setenv("CCS_RAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CCS_RAY_POOL_SHA256_TEXTSPAN_GENERAL", raising=False)
    s = Server(GENERAL)
    monkeypatch.setenv("CCS_RAY_TEXTSPAN_GENERAL_URL", s.url)
    yield s
    s.close()


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


def test_textspan_general_downloads_once_then_pins(server):
    pool = load_pool("textspan-general")
    assert len(pool) == TEXTSPAN_GENERAL_LINES and pool[7] == "Description number 7"
    cached = cache_dir() / "image_descriptions_general.txt"
    assert cached.read_bytes() == GENERAL
    assert (cache_dir() / "image_descriptions_general.txt.sha256").read_text().strip() == hashlib.sha256(GENERAL).hexdigest()
    assert load_pool("textspan-general") == pool and server.requests == 1  # the second load is from the cache
    cached.write_bytes(GENERAL.replace(b"number 7\n", b"number seven\n"))
    with pytest.raises(PoolError, match="the file changed"):
        load_pool("textspan-general")


def test_textspan_general_checks_lines_and_expected_sha(server, monkeypatch):
    server.body = b"just\nthree\nlines\n"
    with pytest.raises(PoolError, match="3 non-empty lines, expected 3498"):
        load_pool("textspan-general")
    server.body = GENERAL
    monkeypatch.setenv("CCS_RAY_POOL_SHA256_TEXTSPAN_GENERAL", "0" * 64)
    with pytest.raises(PoolError, match="CCS_RAY_POOL_SHA256_TEXTSPAN_GENERAL says 0000"):
        load_pool("textspan-general")
    assert not (cache_dir() / "image_descriptions_general.txt").exists()
    monkeypatch.setenv("CCS_RAY_POOL_SHA256_TEXTSPAN_GENERAL", hashlib.sha256(GENERAL).hexdigest())
    assert len(load_pool("textspan-general")) == TEXTSPAN_GENERAL_LINES


def test_textspan_general_offline_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CCS_RAY_CACHE", str(tmp_path))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CCS_RAY_TEXTSPAN_GENERAL_URL", f"http://127.0.0.1:{port}/pool.txt")
    with pytest.raises(PoolError, match="cannot download.*Download it manually.*pass its path"):
        load_pool("textspan-general")


def test_textspan_general_placed_by_hand(monkeypatch, tmp_path):
    monkeypatch.setenv("CCS_RAY_CACHE", str(tmp_path))
    monkeypatch.setenv("CCS_RAY_TEXTSPAN_GENERAL_URL", "http://127.0.0.1:9/unused")
    (tmp_path / "pools").mkdir()
    (tmp_path / "pools" / "image_descriptions_general.txt").write_bytes(GENERAL)
    assert len(load_pool("textspan-general")) == TEXTSPAN_GENERAL_LINES
    assert (tmp_path / "pools" / "image_descriptions_general.txt.sha256").exists()
