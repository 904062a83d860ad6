"""`medr1-train export` on the tiny models: merge, torchao int8 and GGUF variants (Qwen2, Qwen3, Llama) reload,
generate and keep logits, in Transformers and in llama.cpp; outputs appear whole or not at all and accumulate."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
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
ROOT = Path(__file__).resolve().parents[1]
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 10000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,  # short, so that all three of llama3's frequency bands occur
}

# Run in a child process: a llama.cpp crash (a build with the wrong CPU flags segfaults) fails the test, not pytest.
LLAMA_CPP_SCRIPT = """
import json, sys
import numpy as np
import llama_cpp
a = json.loads(sys.argv[1])
llm = llama_cpp.Llama(model_path=a["model"], n_ctx=a["n_ctx"], logits_all=True, verbose=False, n_threads=2)
out = {"tokens": llm.tokenize(a["text"].encode(), add_bos=False, special=True), "n_vocab": llm.n_vocab()}
llm.eval(a["ids"])
np.save(a["scores"], np.asarray(llm.scores[: len(a["ids"])], dtype=np.float32))
if a["generate"]:
    done = llm.create_completion(prompt=a["ids"], max_tokens=a["generate"], temperature=0.0)
    out["generated"] = done["choices"][0]["text"]
    out["generated_tokens"] = done["usage"]["completion_tokens"]
print(json.dumps(out))
"""


def require_llama_cpp() -> None:
    """Skip where llama-cpp-python is not installed; under CI=true (tests/run.sh installs it) that is a failure."""
    if importlib.util.find_spec("llama_cpp") is None:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail("CI=true but llama_cpp is not installed (tests/run.sh builds it)")
        pytest.skip("llama-cpp-python is not installed (tests/run.sh builds it)")


def run_llama_cpp(file: Path, text: str, ids: list[int], scores: Path, generate: int = 0, n_ctx: int = 512) -> dict:
    """llama.cpp in a child process on a GGUF file: how it tokenizes `text`, its logits on `ids` (saved to `scores`,
    a .npy file) and, with `generate`, that many greedy tokens after `ids`."""
    args = {"model": str(file), "text": text, "ids": ids, "scores": str(scores), "generate": generate, "n_ctx": n_ctx}
    proc = subprocess.run(
        [sys.executable, "-c", LLAMA_CPP_SCRIPT, json.dumps(args)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"llama.cpp exited with {proc.returncode}: {proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


def llama_cpp_check(merged_dir: Path, file: Path, tmp_path: Path, generate: int = 0) -> tuple[float, dict]:
    """(relative logit error of llama.cpp on `file` against the merged model, llama.cpp's output) on the probe
    prompt, after checking llama.cpp tokenizes the prompt to Transformers' ids."""
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    inputs = probe(merged_dir)
    merged = export.logits_of(AutoModelForCausalLM.from_pretrained(merged_dir), inputs)[0]
    text = AutoTokenizer.from_pretrained(merged_dir).decode(inputs["input_ids"][0])
    ids = inputs["input_ids"][0].tolist()
    out = run_llama_cpp(file, text, ids, tmp_path / f"{file.stem}.npy", generate=generate)
    assert out["tokens"] == ids
    got = torch.from_numpy(np.load(tmp_path / f"{file.stem}.npy"))[:, : merged.shape[-1]]
    return export.compare(merged, got)[0], out


@pytest.mark.parametrize("kind", ["gguf-f16", "gguf-q8_0", "gguf-q4_0"])
def test_gguf_runs_in_llama_cpp(exported: Path, kind: str, tmp_path: Path) -> None:
    """llama.cpp itself reads the file: same token ids for the chat prompt, logits within the variant's bound."""
    require_llama_cpp()
    file = exported / "gguf" / f"tiny-medr1-{kind.removeprefix('gguf-').upper()}.gguf"
    rel, _ = llama_cpp_check(exported / "merged", file, tmp_path)
    assert 0 < rel < export.REL_ERROR_BOUND[kind]


@pytest.fixture(scope="module")
def students(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny Qwen3 (heads wider than hidden_size / heads) and Llama (Llama-3's tokenizer split, BOS and rope scaling;
    sharp attention, so that the scaling shows in the logits) bases, each with an adapter."""
    from tests.tiny_model import build_tiny_model

    folder = tmp_path_factory.mktemp("students")
    bases = {
        "qwen3": build_tiny_model(folder / "qwen3", arch="qwen3"),
        "llama": build_tiny_model(folder / "llama", arch="llama", rope=LLAMA3_ROPE, qk_gain=4.0),
    }
    return {arch: make_adapter(base, folder / f"{arch}-adapter") for arch, base in bases.items()}


@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_qwen3_and_llama_students_export_to_gguf_that_llama_cpp_runs(
    students: dict[str, Path], arch: str, tmp_path: Path
) -> None:
    import gguf

    require_llama_cpp()
    out = tmp_path / f"{arch}-medr1"
    assert main(["export", str(students[arch]), "--out", str(out), "--merge", "--quantize", "gguf-f16,gguf-q8_0"]) == 0
    config = json.loads((out / "merged" / "config.json").read_text())
    reader = gguf.GGUFReader(out / "gguf" / f"{arch}-medr1-F16.gguf")
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}
    assert fields["general.architecture"] == arch
    assert fields[f"{arch}.attention.key_length"] == config["head_dim"]
    names = {t.name for t in reader.tensors}
    if arch == "qwen3":
        assert config["head_dim"] != config["hidden_size"] // config["num_attention_heads"]
        assert "blk.0.attn_q_norm.weight" in names and "output.weight" not in names  # tied embeddings
    else:
        assert "rope_freqs.weight" in names and "output.weight" in names  # llama3 rope scaling; untied head
        assert reader.get_field("tokenizer.ggml.pre").contents() == "llama-bpe"
        assert reader.get_field("tokenizer.ggml.add_bos_token").contents() is True
    report = {v["kind"]: v for v in json.loads((out / "export_report.json").read_text())["variants"]}
    for kind in ("gguf-f16", "gguf-q8_0"):
        assert report[kind]["check"]["rel_error"] < export.REL_ERROR_BOUND[kind]
        rel, done = llama_cpp_check(out / "merged", out / "gguf" / f"{arch}-medr1-{kind[5:].upper()}.gguf", tmp_path, 4)
        assert 0 < rel < export.REL_ERROR_BOUND[kind], (kind, rel)
        assert done["generated_tokens"] > 0


def test_llama3_rope_scaling_matters_for_the_llama_cpp_check(students: dict[str, Path]) -> None:
    """Control for the test above: without its rope scaling the tiny Llama's logits move far past the F16 bound, so
    a GGUF file that lost the scaling (no `rope_freqs`) would fail it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    base = json.loads((students["llama"] / "adapter_config.json").read_text())["base_model_name_or_path"]
    inputs = probe(Path(base))
    scaled = AutoModelForCausalLM.from_pretrained(base)
    config = AutoConfig.from_pretrained(base)
    config.rope_parameters = {"rope_type": "default", "rope_theta": LLAMA3_ROPE["rope_theta"]}
    plain = AutoModelForCausalLM.from_pretrained(base, config=config)
    rel, _, _ = export.compare(export.logits_of(scaled, inputs), export.logits_of(plain, inputs))
    assert rel > 10 * export.REL_ERROR_BOUND["gguf-f16"]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_unsupported_architecture_is_refused_before_any_work(
    students: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Mistral base (the same modules as Llama, so the adapter fits it) has no GGUF writer here: refused at once."""
    base_dir = json.loads((students["llama"] / "adapter_config.json").read_text())["base_model_name_or_path"]
    mistral = tmp_path / "mistral"
    shutil.copytree(base_dir, mistral)
    config = json.loads((mistral / "config.json").read_text())
    config |= {"model_type": "mistral", "architectures": ["MistralForCausalLM"], "sliding_window": None}
    (mistral / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    args = ["export", str(students["llama"]), "--base", str(mistral), "--out", str(out), "--merge"]
    err = error_of(capsys, [*args, "--quantize", "gguf-q8_0"])
    assert "GGUF export supports qwen2, qwen3, llama students (this base is 'mistral')" in err
    assert "[export] loading base" not in err and not out.exists()  # nothing merged, nothing written


def test_a_failed_export_leaves_the_folder_as_it_was(
    adapter: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["export", str(adapter), "--base", str(tiny_model), "--out", str(out)]
    assert main([*args, "--quantize", "gguf-q8_0"]) == 0
    before = _files(out)

    def broken(*a: object, **k: object) -> None:
        raise export.Medr1Error("int8 failed")

    monkeypatch.setattr(export, "torchao_variant", broken)
    # The merged model and the GGUF file are written before int8 fails: none of them may reach DIR.
    capsys.readouterr()
    assert main([*args, "--merge", "--quantize", "gguf-q4_0,int8"]) == 2
    err = capsys.readouterr().err
    assert "[export] gguf-q4_0 written" in err and err.endswith("medr1-train: error: int8 failed\n")
    assert _files(out) == before  # no merged/, no Q4_0 file, the same report and card
    assert not list(out.glob(".export-*"))  # the staging folder is gone
    fresh = tmp_path / "fresh"
    assert main(["export", str(adapter), "--base", str(tiny_model), "--out", str(fresh), "--quantize", "int8"]) == 2
    assert not fresh.exists()


def test_separate_calls_accumulate_and_overwrite_replaces_one_kind(
    adapter: Path, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "acc"
    args = ["export", str(adapter), "--base", str(tiny_model), "--out", str(out)]
    q8, q4 = out / "gguf" / "acc-Q8_0.gguf", out / "gguf" / "acc-Q4_0.gguf"
    assert main([*args, "--quantize", "gguf-q8_0"]) == 0
    assert main([*args, "--quantize", "gguf-q4_0"]) == 0
    assert main([*args, "--merge"]) == 0
    capsys.readouterr()
    assert "already exists; pass --overwrite" in error_of(capsys, [*args, "--quantize", "gguf-q8_0"])
    q4_bytes = q4.read_bytes()
    q8.write_bytes(b"stale")  # replaced by the next call; Q4_0 must stay as it is
    assert main([*args, "--quantize", "gguf-q8_0", "--overwrite"]) == 0
    assert q4.read_bytes() == q4_bytes and q8.read_bytes()[:4] == b"GGUF"
    report = json.loads((out / "export_report.json").read_text())
    assert [v["kind"] for v in report["variants"]] == ["gguf-q4_0", "merged", "gguf-q8_0"]
    assert {v["path"] for v in report["variants"]} == {str(q4), str(out / "merged"), str(q8)}
    on_disk = sorted(p.relative_to(out).as_posix() for p in (out / "gguf").iterdir())
    assert on_disk == ["gguf/README.md", "gguf/acc-Q4_0.gguf", "gguf/acc-Q8_0.gguf"]
    for v in report["variants"]:
        assert v["bytes"] == export.checks.weights_bytes(Path(v["path"]))
        assert all((out / f).is_file() for f in v["files"])
    assert len(report["commands"]) == 4 and report["commands"][-1].endswith("--quantize gguf-q8_0")
    card = (out / "gguf" / "README.md").read_text()
    assert "| acc-Q4_0.gguf |" in card and "| acc-Q8_0.gguf |" in card  # both files in the check table
    assert "--quantize gguf-q4_0" in card and "--quantize gguf-q8_0" in card
    other = make_adapter(tiny_model, tmp_path / "other-adapter", seed=5)
    capsys.readouterr()
    err = error_of(capsys, ["export", str(other), "--base", str(tiny_model), "--out", str(out), "--quantize", "int8"])
    assert "holds variants of another adapter or base" in err
