"""Helpers of the serving tests: tiny artifacts trained on real data, a real ``seqrec serve``
process, a private ``redis-server`` process, and skips that turn into failures in CI (where
redis-server and chromium are installed by ``.ci/run``)."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "test-key-0123456789abcdef"
_ARTIFACTS: dict[tuple, Path] = {}
_ARTIFACT_DIR = Path(tempfile.mkdtemp(prefix="seqrec-serve-tests-"))
atexit.register(shutil.rmtree, _ARTIFACT_DIR, True)


def require_binary(name: str, why: str) -> str:
    """The binary's path; skip (locally) or fail (in CI) when it is missing."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not installed ({why}); `apt-get install -y {why}`"
        if os.environ.get("CI"):
            pytest.fail(f"{msg}: CI must install it (.ci/run)")
        pytest.skip(msg)
    return path


def tiny_artifact(ml100k_slice: Path, model: str = "sasrec", *sets: str) -> Path:
    """A model trained for one epoch on the real ML-100K slice (seconds), cached per process."""
    from seqrec.cli import main

    key = (str(ml100k_slice), model, sets)
    if key not in _ARTIFACTS:
        out = _ARTIFACT_DIR / f"{model}-{len(_ARTIFACTS)}"
        args = ["-q", "train", "--data", str(ml100k_slice), "--model", model, "--output", str(out),
                "--epochs", "1", "--seed", "7", "--no-progress"]
        for s in sets:
            args += ["--set", s]
        assert main(args) == 0
        _ARTIFACTS[key] = out
    return _ARTIFACTS[key]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout} s")


class ServerProcess:
    """``python -m seqrec serve`` in a subprocess, logs to a file."""

    def __init__(self, artifact: Path, store: str, log_path: Path, *extra: str,
                 api_key: str | None = API_KEY) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("SEQREC_API_KEY", None)
        if api_key:
            env["SEQREC_API_KEY"] = api_key
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "seqrec", "serve", str(artifact), "--port", str(self.port),
             "--store", store, *extra],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=log_path.parent)
        try:
            wait_port(self.port, 60, self.proc)
        except Exception:
            self.kill()
            raise RuntimeError(f"server did not start:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill(signal.SIGTERM)


class RedisProcess:
    """A private redis-server (own port and folder) that fsyncs its append-only file before
    every reply, as production should."""

    def __init__(self, folder: Path, durable: bool = True, port: int | None = None) -> None:
        binary = require_binary("redis-server", "redis-server")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.durable = durable
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(folder),
             "--appendonly", "yes" if durable else "no",
             "--appendfsync", "always" if durable else "everysec", "--save", "",
             "--daemonize", "no", "--logfile", str(folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, 20, self.proc)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def restart(self) -> None:
        """Start again on the same port and folder (after :meth:`kill`)."""
        self.kill()
        self.__init__(self.folder, self.durable, self.port)  # type: ignore[misc]
