"""`accelerate launch` with the shipped 2-process CPU config (gloo DDP) runs `medr1-train sft` unchanged."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from medr1_train.config import RECIPES_DIR
from tests.test_train_fixtures import build_demo_release, tiny_recipe

pytest.importorskip("accelerate", reason="accelerate is in the train extra")
pytest.importorskip("trl", reason="trl is in the train extra")


@pytest.fixture(scope="module")
def demo_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_release(tmp_path_factory.mktemp("release"))


CPU_DDP = RECIPES_DIR.parent / "accelerate_configs" / "cpu_ddp.yaml"
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_cpu_run_completes(tmp_path: Path, tiny_model: Path, demo_release: Path) -> None:
    out = tmp_path / "ddp"
    recipe = tiny_recipe(tmp_path / "ddp.yaml", tiny_model, demo_release, out, train={"max_steps": 4, "save_steps": 2})
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(CPU_DDP), "--main_process_port", str(_free_port()),
        "-m", "medr1_train.cli", "sft", "--config", str(recipe), "--train.gradient_checkpointing", "true",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[medr1-train] processes: 2 (MULTI_CPU, device cpu)" in proc.stderr
    assert proc.stderr.count("[medr1-train] adapter saved") == 1  # the main process logs and writes
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    meta = json.loads((out / "adapter" / "medr1_train.json").read_text())
    assert meta["global_step"] == 4
    assert (out / "adapter" / "adapter_model.safetensors").stat().st_size > 0
