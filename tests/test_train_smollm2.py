"""A real pretrained student end to end on CPU: SmolLM2-135M-Instruct (Llama architecture; its chat template has no
{% generation %} markers and TRL has no training version of it) trained by `medr1-train sft` on the demo release,
exported merged + int8 + GGUF, the GGUF file run by llama.cpp and the merged model scored by `medr1-eval`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from statistics import mean

import pytest

from tests.test_train_fixtures import build_demo_release, tiny_recipe

torch = pytest.importorskip("torch", reason="torch is in the train extra")
pytest.importorskip("trl", reason="trl is in the train extra")

from medr1_train.cli import main  # noqa: E402
from medr1_train.config import load_config  # noqa: E402
from medr1_train.data import PROMPT_COMPLETION  # noqa: E402
from medr1_train.export import REL_ERROR_BOUND  # noqa: E402
from medr1_train.sft import Result, train  # noqa: E402
from tests.test_export import llama_cpp_check, require_llama_cpp  # noqa: E402

pytestmark = pytest.mark.slow
ROWS, EPOCHS = 4, 3  # four demo traces seen three times: the last pass's loss is on the same rows as the first's
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Result:
    """LoRA SFT of SmolLM2 on the demo release: one trace per step, 12 steps (about 20 s on two cores)."""
    folder = tmp_path_factory.mktemp("smollm2-sft")
    recipe = tiny_recipe(
        folder / "smollm2.yaml",
        smollm2,
        build_demo_release(folder),
        folder / "run",
        data={"eval_fraction": 0.0, "max_rows": ROWS},
        lora={"r": 8, "alpha": 16},
        train={"max_steps": ROWS * EPOCHS, "per_device_train_batch_size": 1, "packing": False, "learning_rate": 2e-3},
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        return train(load_config(str(recipe)))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def exported(trained: Result, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("smollm2-export") / "smollm2-medr1"
    assert main(["export", str(trained.adapter_dir), "--out", str(out), "--merge", "--quantize", "int8,gguf-q8_0"]) == 0
    return out


def test_lora_sft_lowers_the_loss_of_a_real_model(trained: Result, smollm2: Path) -> None:
    from transformers import AutoTokenizer

    assert trained.stats["conversations"] == "release column messages"
    assert trained.stats["loss_on"] == PROMPT_COMPLETION  # any template: the loss is on the completion only
    assert trained.stats["train_assistant_tokens"] < trained.stats["train_tokens"] / 2
    losses = [h["loss"] for h in trained.log_history if "loss" in h]
    assert len(losses) == ROWS * EPOCHS
    first, last = mean(losses[:ROWS]), mean(losses[-ROWS:])
    assert 1.0 < first < 6.0  # a pretrained model: far below uniform (ln 49152 = 10.8) before training
    assert last < first - 0.3, f"loss did not fall: {first:.3f} -> {last:.3f}"
    adapter_tok = AutoTokenizer.from_pretrained(trained.adapter_dir)
    assert adapter_tok.chat_template == AutoTokenizer.from_pretrained(smollm2).chat_template


def test_export_writes_merged_int8_and_gguf_that_reload_close(exported: Path) -> None:
    import gguf

    report = json.loads((exported / "export_report.json").read_text())
    variants = {v["kind"]: v for v in report["variants"]}
    assert list(variants) == ["merged", "int8", "gguf-q8_0"]
    for kind, v in variants.items():
        check = v["check"]
        assert 0 < check["rel_error"] < REL_ERROR_BOUND[kind], kind
        assert check["generated_tokens"] > 0 and check["tokenizer_matches"], kind
    assert json.loads((exported / "merged" / "config.json").read_text())["model_type"] == "llama"
    reader = gguf.GGUFReader(exported / "gguf" / "smollm2-medr1-Q8_0.gguf")
    assert reader.get_field("general.architecture").contents() == "llama"
    assert variants["gguf-q8_0"]["bytes"] < variants["int8"]["bytes"] < variants["merged"]["bytes"]
    for folder in ("merged", "int8", "gguf"):
        assert "## Export check" in (exported / folder / "README.md").read_text()


def test_llama_cpp_runs_the_exported_gguf(exported: Path, tmp_path: Path) -> None:
    require_llama_cpp()
    file = exported / "gguf" / "smollm2-medr1-Q8_0.gguf"
    rel, out = llama_cpp_check(exported / "merged", file, tmp_path, generate=16)
    assert 0 < rel < REL_ERROR_BOUND["gguf-q8_0"]
    assert out["generated_tokens"] > 0 and out["generated"].strip()


def test_medr1_eval_scores_the_merged_model(exported: Path, shared_data: Path, tmp_path: Path) -> None:
    cmd = [
        str(Path(sys.executable).parent / "medr1-eval"), "--model", "hf",
        "--model_args", f"pretrained={exported / 'merged'},dtype=float32", "--tasks", "medr1_medqa", "--limit", "2",
        "--apply_chat_template", "--gen_kwargs", "max_gen_toks=48", "--device", "cpu", "--log_samples",
        "--metadata", json.dumps({"benchmark_dir": str(shared_data / "benchmarks")}),
        "--output_path", str(tmp_path / "eval"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = (tmp_path / "eval").rglob("results_*.json")
    task = json.loads(results.read_text())["results"]["medr1_medqa"]
    assert task["sample_len"] == 2 and 0 <= task["acc,committed"] <= 1
    samples = [json.loads(line) for f in (tmp_path / "eval").rglob("samples_medr1_medqa_*.jsonl") for line in f.open()]
    assert len(samples) == 2 and all(s["resps"][0][0].strip() for s in samples)  # the student wrote something
