"""`medr1-train export` on the tiny model: merge, torchao int8 and GGUF variants reload, generate and keep logits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="torch is in the train extra")
pytest.importorskip("peft", reason="peft is in the train extra")

from medr1_train import export  # noqa: E402
from medr1_train.cli import main  # noqa: E402

KINDS = ["int8", "gguf-f16", "gguf-q8_0", "gguf-q4_0"]
RECORD = {
    "recipe": {"name": "tiny-test", "lora": {"r": 8, "alpha": 16}},
    "recipe_file": "tiny-test.yaml",
    "recipe_sha256": "0123abcd",
    "dataset": {"dataset": "medr1/reasoning", "revision": "v0.3.1"},
    "data_stats": {"train_rows": 12},
}
EVALS = {"results": {"medr1_medqa": {"alias": "medr1_medqa", "acc,none": 0.375, "acc_stderr,none": 0.05}}}


def make_adapter(base: Path, out: Path, seed: int = 1, **lora: object) -> Path:
    """A LoRA adapter with non-zero B matrices (so merging changes the logits), saved to `out`."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(seed)
    config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, **lora)
    get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The adapter folder as `medr1-train sft` leaves it: weights, tokenizer, training record, eval results."""
    path = make_adapter(tiny_model, tmp_path_factory.mktemp("adapter") / "adapter")
    (path / "medr1_train.json").write_text(json.dumps(RECORD))
    (path / "eval_results.json").write_text(json.dumps(EVALS))
    return path


@pytest.fixture(scope="module")
def exported(adapter: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `medr1-train export --merge --quantize ...` run shared by the checks below."""
    out = tmp_path_factory.mktemp("export") / "tiny-medr1"
    argv = ["export", str(adapter), "--base", str(tiny_model), "--out", str(out), "--merge"]
    assert main([*argv, "--quantize", ",".join(KINDS[:2]), "--quantize", KINDS[2], "--quantize", KINDS[3]]) == 0
    return out


def probe(tokenizer_dir: Path) -> dict:
    from transformers import AutoTokenizer

    return export.probe_inputs(AutoTokenizer.from_pretrained(tokenizer_dir))


def test_merged_matches_base_plus_adapter(exported: Path, adapter: Path, tiny_model: Path) -> None:
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    merged_dir = exported / "merged"
    inputs = probe(tiny_model)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    base_logits = export.logits_of(base, inputs)
    unmerged = export.logits_of(PeftModel.from_pretrained(base, adapter), inputs)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    merged_logits = export.logits_of(merged, inputs)
    # The adapter really changes the model, and the merged weights reproduce base + adapter to float32 rounding.
    assert export.compare(base_logits, unmerged)[0] > 0.1
    assert export.compare(unmerged, merged_logits)[0] < export.REL_ERROR_BOUND["merged"]
    # A plain model in the base's dtype, with no LoRA left in it.
    with safe_open(merged_dir / "model.safetensors", framework="pt") as f:
        keys = list(f.keys())
        assert {f.get_tensor(k).dtype for k in keys} == {torch.float32}
    assert keys and not any("lora" in k for k in keys)
    tok = AutoTokenizer.from_pretrained(merged_dir)
    assert tok.chat_template == AutoTokenizer.from_pretrained(tiny_model).chat_template
    assert (
        GenerationConfig.from_pretrained(merged_dir).to_dict() == GenerationConfig.from_pretrained(tiny_model).to_dict()
    )
    out = merged.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 6


def test_int8_variant_is_smaller_reloads_and_stays_close(exported: Path) -> None:
    from transformers import AutoModelForCausalLM

    inputs = probe(exported / "int8")
    merged = export.logits_of(AutoModelForCausalLM.from_pretrained(exported / "merged"), inputs)
    model = AutoModelForCausalLM.from_pretrained(exported / "int8", device_map="cpu")
    weight = model.model.layers[0].self_attn.q_proj.weight
    assert "Int8" in type(weight).__name__  # a torchao int8 tensor, not float weights
    rel, _, top1 = export.compare(merged, export.logits_of(model, inputs))
    assert 0 < rel < export.REL_ERROR_BOUND["int8"]
    assert top1 > 0.9
    assert model.generate(**inputs, max_new_tokens=4, do_sample=False).shape[1] == inputs["input_ids"].shape[1] + 4
    merged_bytes = (exported / "merged" / "model.safetensors").stat().st_size
    assert (exported / "int8" / "model.safetensors").stat().st_size < 0.6 * merged_bytes
    assert (
        json.loads((exported / "int8" / "config.json").read_text())["quantization_config"]["quant_method"] == "torchao"
    )


@pytest.mark.parametrize("kind", ["gguf-f16", "gguf-q8_0", "gguf-q4_0"])
def test_gguf_variants_load_in_transformers(exported: Path, kind: str) -> None:
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = exported / "gguf"
    file = f"tiny-medr1-{kind.removeprefix('gguf-').upper()}.gguf"
    reader = gguf.GGUFReader(folder / file)
    arch = reader.get_field("general.architecture")
    assert arch is not None and arch.contents() == "qwen2"
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == kind.removeprefix("gguf-").upper()
    assert types["blk.0.attn_norm.weight"] == "F32" and types["blk.0.attn_q.bias"] == "F32"
    assert "output.weight" not in types  # tied embeddings: llama.cpp reuses token_embd
    chat = reader.get_field("tokenizer.chat_template")
    assert chat is not None and "<|im_start|>" in chat.contents()

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    inputs = probe(exported / "merged")
    assert export.probe_inputs(tok)["input_ids"].tolist() == inputs["input_ids"].tolist()
    merged = export.logits_of(AutoModelForCausalLM.from_pretrained(exported / "merged"), inputs)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    rel, _, _ = export.compare(merged, export.logits_of(model, inputs))
    assert 0 < rel < export.REL_ERROR_BOUND[kind]
    assert model.generate(**inputs, max_new_tokens=4, do_sample=False).shape[1] == inputs["input_ids"].shape[1] + 4


def test_sizes_order_and_report(exported: Path) -> None:
    report = json.loads((exported / "export_report.json").read_text())
    variants = {v["kind"]: v for v in report["variants"]}
    assert list(variants) == ["merged", *KINDS]
    for kind, v in variants.items():
        assert v["check"]["rel_error"] < export.REL_ERROR_BOUND[kind], kind
        assert v["check"]["generated_tokens"] > 0 and v["check"]["tokenizer_matches"]
    sizes = [variants[k]["bytes"] for k in ("merged", "gguf-f16", "gguf-q8_0", "gguf-q4_0")]
    assert sizes == sorted(sizes, reverse=True)


def test_cards_record_provenance_and_how_to_load(exported: Path) -> None:
    for folder, needle in (("merged", "vllm serve"), ("int8", "device_map"), ("gguf", "llama-cli")):
        card = (exported / folder / "README.md").read_text()
        assert card.startswith("---\n") and "base_model:" in card
        assert "medr1/reasoning" in card and "v0.3.1" in card  # dataset and revision from medr1_train.json
        assert "tiny-test" in card and "0123abcd" in card  # the training recipe
        assert "| medr1_medqa | acc,none | 0.3750 |" in card  # eval results from the adapter folder
        assert "medr1-train export" in card and needle in card
        assert "## Export check" in card
    assert "library_name: gguf" in (exported / "gguf" / "README.md").read_text()


def test_bf16_base_stays_bf16(tiny_model: Path, tmp_path: Path) -> None:
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    base = tmp_path / "base-bf16"
    shutil.copytree(tiny_model, base)
    AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16).save_pretrained(base)
    adapter = make_adapter(base, tmp_path / "adapter", seed=2)
    assert main(["export", str(adapter), "--out", str(tmp_path / "out"), "--merge"]) == 0
    with safe_open(tmp_path / "out" / "merged" / "model.safetensors", framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}  # noqa: SIM118
    report = json.loads((tmp_path / "out" / "export_report.json").read_text())
    assert report["dtype"] == "bfloat16"
    # bf16 rounding of the merged weights: close to base + adapter, not exact.
    check = report["variants"][0]["check"]
    assert 0 < check["rel_error"] < check["bound"] == export.REL_ERROR_BOUND["merged"] + export.LOW_PRECISION_NOISE


def error_of(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medr1-train: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], adapter: Path, tiny_model: Path, tmp_path: Path
) -> None:
    def base_with(name: str, **changes: int) -> Path:  # the compatibility check reads only the config
        config = json.loads((tiny_model / "config.json").read_text()) | changes
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        return tmp_path / name

    out = ["--out", str(tmp_path / "out")]
    assert "adapter folder not found" in error_of(capsys, ["export", str(tmp_path / "nope"), *out, "--merge"])
    assert "no adapter_config.json" in error_of(capsys, ["export", str(tiny_model), *out, "--merge"])
    err = error_of(capsys, ["export", str(adapter), *out, "--quantize", "int3"])
    assert "unknown quantization kind 'int3'" in err and "gguf-q8_0" in err
    assert "nothing to export" in error_of(capsys, ["export", str(adapter), *out])

    wider = base_with("wider", hidden_size=128, intermediate_size=256)
    shallower = base_with("shallower", num_hidden_layers=1, layer_types=["full_attention"])
    err = error_of(capsys, ["export", str(adapter), "--base", str(wider), *out, "--merge"])
    assert "does not match base" in err and "input size" in err
    err = error_of(capsys, ["export", str(adapter), "--base", str(shallower), *out, "--merge"])
    assert "model.layers.1." in err and "does not have" in err
    assert "cannot read its config" in error_of(
        capsys, ["export", str(adapter), "--base", str(tmp_path / "missing-base"), *out, "--merge"]
    )
    if not torch.cuda.is_available():
        assert "needs a CUDA GPU" in error_of(capsys, ["export", str(adapter), *out, "--quantize", "int4"])
    assert not (tmp_path / "out").exists()  # every error came before anything was written

    (tmp_path / "out" / "merged").mkdir(parents=True)
    (tmp_path / "out" / "merged" / "keep.txt").write_text("x")
    assert "--overwrite" in error_of(capsys, ["export", str(adapter), *out, "--merge"])


@pytest.mark.parametrize("kind", ["gguf-f16", "gguf-q8_0", "gguf-q4_0"])
def test_gguf_runs_in_llama_cpp(exported: Path, kind: str) -> None:
    """llama.cpp itself reads the file: same token ids for the chat prompt, logits within the variant's bound."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is optional (not in the deploy extra)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    inputs = probe(exported / "merged")
    merged = export.logits_of(AutoModelForCausalLM.from_pretrained(exported / "merged"), inputs)[0]
    file = exported / "gguf" / f"tiny-medr1-{kind.removeprefix('gguf-').upper()}.gguf"
    llm = llama_cpp.Llama(model_path=str(file), n_ctx=512, logits_all=True, verbose=False)
    text = AutoTokenizer.from_pretrained(exported / "merged").decode(inputs["input_ids"][0])
    ids = inputs["input_ids"][0].tolist()
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
    llm.eval(ids)
    got = torch.tensor(llm.scores[: len(ids)])
    rel, _, _ = export.compare(merged, got)
    assert rel < export.REL_ERROR_BOUND[kind]
