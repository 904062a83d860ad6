"""Shared fixtures: the real reference data beside the checkout, and the hand-made source fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """`../shared/data` (real benchmark test sets and R1 traces); skips where a checkout has none beside it."""
    if not (SHARED_DATA / "benchmarks").is_dir():
        pytest.skip(f"real reference data not found at {SHARED_DATA} (present in CI, absent in a user's clone)")
    return SHARED_DATA


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
