"""JupyterLab, as `make lab` starts it: headless on 127.0.0.1, its contents API lists the notebooks, and a notebook
opened through a session executes a cell on the project's kernel (the virtual environment's python3)."""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import missing_prerequisite

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server in a subprocess and a small client of its REST and websocket APIs."""

    def __init__(self, tmp: Path):
        self.port, self.token = free_port(), secrets.token_hex(16)
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp / "config"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
               "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "ws")}
        self.log = open(tmp / "lab.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={REPO}", *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI runs as root
            stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def request(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            data = resp.read()
        return json.loads(data) if data else None

    def wait_until_up(self, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"JupyterLab exited with {self.proc.returncode}: see {self.log.name}")
            try:
                self.request("GET", "/api/status")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        raise AssertionError(f"JupyterLab did not answer on port {self.port} within {timeout:.0f} s")

    def execute(self, kernel_id: str, code: str, timeout: float = 120.0) -> dict:
        """Runs ``code`` on the kernel through the server's websocket; returns {status, stdout, error}."""
        import websocket

        ws = websocket.create_connection(
            f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels?token={self.token}", timeout=timeout)
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        out = {"status": None, "stdout": "", "error": None}
        idle = False
        try:
            while out["status"] is None or not idle:
                msg = json.loads(ws.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["header"]["msg_type"]
                if kind == "stream":
                    out["stdout"] += msg["content"]["text"]
                elif kind == "error":
                    out["error"] = f"{msg['content']['ename']}: {msg['content']['evalue']}"
                elif kind == "execute_reply":
                    out["status"] = msg["content"]["status"]
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    idle = True
        finally:
            ws.close()
        return out

    def stop(self) -> None:
        try:
            self.request("POST", "/api/shutdown")
            self.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001 - the server is going away either way
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def lab(tmp_path):
    for module in ("jupyterlab", "websocket"):
        try:
            __import__(module)
        except ImportError:
            missing_prerequisite(f"`{module}` is not installed: run `make venv` (the book extra installs JupyterLab)")
    server = Lab(tmp_path)
    try:
        server.wait_until_up()
        yield server
    finally:
        server.stop()


def test_jupyterlab_lists_the_notebooks_and_runs_one_on_the_projects_kernel(lab):
    listing = lab.request("GET", "/api/contents/notebooks")
    names = {item["name"] for item in listing["content"]}
    committed = {p.name for p in (REPO / "notebooks").glob("*.ipynb")}
    assert committed and committed <= names

    specs = lab.request("GET", "/api/kernelspecs")
    assert "python3" in specs["kernelspecs"]

    path = "notebooks/01_ebm_view.ipynb"
    notebook = lab.request("GET", f"/api/contents/{path}")
    assert notebook["type"] == "notebook"
    cells = [c for c in notebook["content"]["cells"] if c["cell_type"] == "code"]
    session = lab.request("POST", "/api/sessions", {"path": path, "type": "notebook", "name": "01_ebm_view.ipynb",
                                                    "kernel": {"name": "python3"}})
    kernel_id = session["kernel"]["id"]
    try:
        first = lab.execute(kernel_id, "".join(cells[0]["source"]))  # the notebook's first cell, as Lab runs it
        assert first["status"] == "ok", first["error"]
        where = lab.execute(kernel_id, "import sys, sea_minimal; print(sys.prefix); print(sea_minimal.__file__)")
        assert where["status"] == "ok", where["error"]
        prefix, package = where["stdout"].split()
        assert Path(prefix) == Path(sys.prefix)  # the project's environment, not some other python3
        assert Path(package).resolve().is_relative_to(REPO)
    finally:
        lab.request("DELETE", f"/api/sessions/{session['id']}")
