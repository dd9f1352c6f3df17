"""`python -m sea_minimal data fetch` against a local HTTP server on 127.0.0.1 (no other network, files in tmp_path)."""

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import missing_prerequisite
from sea_minimal import data, data_fetch
from sea_minimal.__main__ import main

CSV = b"goal,target\nWrite a poem about rain,\"Sure, here is a poem about rain\"\nSay hello,\"Sure, hello\"\n"
RELATIVE = "advbench/harmful_behaviors.csv"


class RangeHandler(BaseHTTPRequestHandler):
    """Serves the files of ``server.root``; answers ``Range: bytes=N-`` with 206 unless ``server.ignore_range``."""

    def do_GET(self):
        file = self.server.root / self.path.lstrip("/")
        rng = self.headers.get("Range")
        self.server.requests.append((self.path, rng))
        if not file.is_file():
            self.send_error(404)
            return
        body = file.read_bytes()
        if rng and not self.server.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            body = body[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """urllib would send even 127.0.0.1 requests through a proxy named in the environment."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.root, httpd.requests, httpd.ignore_range = root, [], False
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def serve_advbench(server, monkeypatch, body=CSV, pinned=None):
    """Serve ``body`` as the only download (AdvBench), pinned to ``pinned`` (default: its own hash)."""
    (server.root / "harmful_behaviors.csv").write_bytes(body)
    url = server.url + "harmful_behaviors.csv"
    monkeypatch.setattr(data_fetch, "DOWNLOADS", {"advbench": [(RELATIVE, url, pinned or sha(body), len(body))]})
    return url


def test_table_covers_every_loader_path():
    assert set(data_fetch.DOWNLOADS) == set(data.FILES)
    for name, entries in data_fetch.DOWNLOADS.items():
        for relative, url, sha256, size in entries:
            assert relative == data.FILES[name][0] or relative.startswith(data.FILES[name][0] + "/")
            assert url.startswith(("https://raw.githubusercontent.com/", "https://media.githubusercontent.com/"))
            assert "/main/" not in url and "/master/" not in url  # pinned to a commit or tag
            assert len(sha256) == 64 and size > 0


def test_download_checksum_and_layout(server, monkeypatch, tmp_path, capsys):
    serve_advbench(server, monkeypatch)
    root = tmp_path / "data"
    assert main(["data", "fetch", "--dir", str(root)]) == 0
    assert (root / RELATIVE).read_bytes() == CSV
    assert not data_fetch.partial_path(root / RELATIVE).exists()
    out = capsys.readouterr().out
    assert f"downloaded {RELATIVE}" in out and "math/test.jsonl" in out  # the manual file is reported, not failed
    rows = data.load_advbench(path=root)
    assert [r["prompt"] for r in rows] == ["Write a poem about rain", "Say hello"]
    assert rows[0]["target"] == "Sure, here is a poem about rain"


def test_present_file_is_skipped(server, monkeypatch, tmp_path, capsys):
    serve_advbench(server, monkeypatch)
    (tmp_path / "advbench").mkdir()
    (tmp_path / RELATIVE).write_bytes(CSV)
    assert data_fetch.fetch(tmp_path, ["advbench"]) == 0
    assert f"ok         {RELATIVE}" in capsys.readouterr().out
    assert server.requests == []


def test_checksum_mismatch_leaves_no_file(server, monkeypatch, tmp_path, capsys):
    pinned = sha(b"something else")
    url = serve_advbench(server, monkeypatch, pinned=pinned)
    assert data_fetch.fetch(tmp_path, ["advbench"]) == 1
    err = capsys.readouterr().err
    assert pinned in err and sha(CSV) in err and url in err and "advbench" in err
    assert not (tmp_path / RELATIVE).exists() and not data_fetch.partial_path(tmp_path / RELATIVE).exists()


def test_resume_from_partial_file(server, monkeypatch, tmp_path):
    serve_advbench(server, monkeypatch)
    (tmp_path / "advbench").mkdir()
    data_fetch.partial_path(tmp_path / RELATIVE).write_bytes(CSV[:20])
    assert data_fetch.fetch(tmp_path, ["advbench"]) == 0
    assert server.requests == [("/harmful_behaviors.csv", "bytes=20-")]
    assert (tmp_path / RELATIVE).read_bytes() == CSV
    assert not data_fetch.partial_path(tmp_path / RELATIVE).exists()


def test_complete_partial_file_is_checked_without_a_request(server, monkeypatch, tmp_path):
    serve_advbench(server, monkeypatch)
    (tmp_path / "advbench").mkdir()
    data_fetch.partial_path(tmp_path / RELATIVE).write_bytes(CSV)
    assert data_fetch.fetch(tmp_path, ["advbench"]) == 0
    assert server.requests == [] and (tmp_path / RELATIVE).read_bytes() == CSV


def test_server_ignoring_range_restarts_from_zero(server, monkeypatch, tmp_path):
    serve_advbench(server, monkeypatch)
    server.ignore_range = True
    (tmp_path / "advbench").mkdir()
    data_fetch.partial_path(tmp_path / RELATIVE).write_bytes(b"stale bytes from another file")
    assert data_fetch.fetch(tmp_path, ["advbench"]) == 0
    assert server.requests == [("/harmful_behaviors.csv", "bytes=29-")]
    assert (tmp_path / RELATIVE).read_bytes() == CSV


def test_offline_one_line_and_exit_status(monkeypatch, tmp_path, capsys):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/harmful_behaviors.csv"
    monkeypatch.setattr(data_fetch, "DOWNLOADS", {"advbench": [(RELATIVE, url, sha(CSV), len(CSV))]})
    assert main(["data", "fetch", "--dir", str(tmp_path), "--only", "advbench"]) == 1
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert "advbench" in line and url in line and str(tmp_path / "advbench") in line
    assert "Traceback" not in err and len([x for x in err.splitlines() if x.startswith("error:")]) == 1
    assert main(["data", "fetch", "--dir", str(tmp_path), "--only", "advbench", "--best-effort"]) == 0
    assert url in capsys.readouterr().err


def test_http_error_names_the_url(server, monkeypatch, tmp_path, capsys):
    url = server.url + "missing.csv"
    monkeypatch.setattr(data_fetch, "DOWNLOADS", {"advbench": [(RELATIVE, url, sha(CSV), len(CSV))]})
    assert data_fetch.fetch(tmp_path, ["advbench"]) == 1
    assert "HTTP 404" in capsys.readouterr().err


def test_refuses_to_overwrite_a_different_file_without_force(server, monkeypatch, tmp_path, capsys):
    serve_advbench(server, monkeypatch)
    (tmp_path / "advbench").mkdir()
    (tmp_path / RELATIVE).write_bytes(b"my own edits\n")
    assert data_fetch.fetch(tmp_path, ["advbench"]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / RELATIVE) in err and sha(CSV) in err and sha(b"my own edits\n") in err and "--force" in err
    assert (tmp_path / RELATIVE).read_bytes() == b"my own edits\n" and server.requests == []
    assert main(["data", "fetch", "--dir", str(tmp_path), "--only", "advbench", "--force"]) == 0
    assert (tmp_path / RELATIVE).read_bytes() == CSV


def test_unknown_name_lists_the_known_ones(tmp_path, capsys):
    assert main(["data", "fetch", "--dir", str(tmp_path), "--only", "advbench", "mmlu"]) == 2
    err = capsys.readouterr().err
    assert "mmlu" in err and all(name in err for name in data.FILES) and len(err.strip().splitlines()) == 1


def test_pinned_hashes_match_the_data_folder():
    root = data.data_dir()
    if not (root / "advbench").is_dir():
        missing_prerequisite(f"no data directory at {root}: set SEA_DATA_DIR to a folder with the data sets")
    pinned = [(rel, h, n) for entries in data_fetch.DOWNLOADS.values() for rel, _, h, n in entries]
    pinned += [(rel, h, n) for rel, h, n, _ in data_fetch.MANUAL]
    for relative, sha256, size in pinned:
        file = root / relative
        if not file.is_file():
            missing_prerequisite(f"{file} is missing from the data directory {root}")
        assert (data_fetch.sha256_of(file), file.stat().st_size) == (sha256, size), relative
