"""LoRA SFT on a tiny random model: packing isolation, falling loss, adapter round trip, merge and resume."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from tests.test_train_fixtures import build_demo_release, build_fit_model, tiny_recipe

torch = pytest.importorskip("torch", reason="torch is in the train extra")
pytest.importorskip("trl", reason="trl is in the train extra")

from medr1_train.config import SFTRecipe, load_config  # noqa: E402
from medr1_train.data import prepare  # noqa: E402
from medr1_train.sft import build_trainer, load_tokenizer, train  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these matrices are tiny, and on a busy shared runner spinning threads cost 10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def demo_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_release(tmp_path_factory.mktemp("release"))


@pytest.fixture(scope="module")
def fit_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fit_model(tiny_model, tmp_path_factory.mktemp("fit-model"))


def _recipe(tmp_path: Path, tiny_model: Path, release: Path, name: str, **sections: dict) -> SFTRecipe:
    return load_config(str(tiny_recipe(tmp_path / f"{name}.yaml", tiny_model, release, tmp_path / name, **sections)))


def _inputs(model_dir: Path, n: int = 2):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    text = tok.apply_chat_template(
        [
            {"role": "user", "content": "Which drug? A. atropine B. timolol"},
            {"role": "assistant", "content": "<think>"},
        ],
        tokenize=False,
    )
    return tok([text] * n, return_tensors="pt")["input_ids"]


def test_packed_examples_cannot_attend_to_each_other(tmp_path: Path, tiny_model: Path, demo_release: Path) -> None:
    recipe = _recipe(tmp_path, tiny_model, demo_release, "pack", train={"per_device_train_batch_size": 4})
    tok = load_tokenizer(recipe)
    trainer = build_trainer(recipe, prepare(recipe.data, tok, seed=0), tok)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch  # padding-free: one row, positions restart at each example
    pos = batch["position_ids"][0]
    starts = (pos == 0).nonzero().flatten().tolist()
    bounds = [*starts, len(pos)]
    assert len(starts) >= 4 and batch["input_ids"].shape[0] == 1
    assert all(batch["labels"][0, s] == -100 for s in starts)  # no loss across an example boundary

    model = trainer.model.eval()
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
        for a, b in itertools.pairwise(bounds):
            alone = model(input_ids=batch["input_ids"][:, a:b]).logits[0]
            torch.testing.assert_close(packed[a:b], alone, atol=2e-5, rtol=1e-4)
        # Control: the same tokens with positions running on across examples (plain concatenation) do attend
        # to the earlier examples, so the comparison above can fail.
        leaky = model(input_ids=batch["input_ids"]).logits[0]
    assert not torch.allclose(leaky[bounds[1] : bounds[2]], packed[bounds[1] : bounds[2]], atol=1e-3)


def test_without_packing_batches_are_grouped_by_length(tmp_path: Path, tiny_model: Path, demo_release: Path) -> None:
    from transformers.trainer_pt_utils import LengthGroupedSampler

    recipe = _recipe(tmp_path, tiny_model, demo_release, "nopack", train={"packing": False})
    tok = load_tokenizer(recipe)
    trainer = build_trainer(recipe, prepare(recipe.data, tok, seed=0), tok)
    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 2 and "attention_mask" in batch  # padded rows, one example each
    lengths = batch["attention_mask"].sum(1)
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()  # no loss on padding
    assert int(lengths.max()) == batch["input_ids"].shape[1]


def test_loss_falls_and_adapter_and_merged_model_reload_to_the_same_logits(
    tmp_path: Path, fit_model: Path, demo_release: Path
) -> None:
    tiny_model = fit_model
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    recipe = _recipe(
        tmp_path,
        tiny_model,
        demo_release,
        "fit",
        train={"max_steps": 30, "learning_rate": 1e-2, "save_steps": 100, "merge": True, "eval_steps": 10},
        lora={"r": 16, "alpha": 32},
    )
    result = train(recipe)
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.5, f"loss did not fall: {first:.3f} -> {last:.3f}"
    evals = [h["eval_loss"] for h in result.log_history if "eval_loss" in h]
    assert len(evals) == 3 and evals[-1] < evals[0]  # held-out questions improve too

    ids = _inputs(tiny_model)
    trained = result.trainer.model.eval()
    with torch.no_grad():
        expected = trained(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
        base_logits = base(input_ids=ids).logits
        reloaded = PeftModel.from_pretrained(base, result.adapter_dir).eval()
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, atol=1e-6, rtol=1e-6)
        merged = AutoModelForCausalLM.from_pretrained(result.merged_dir, dtype=torch.float32).eval()
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(base_logits, expected, atol=1e-3)  # the adapter changed the model

    meta = json.loads((result.adapter_dir / "medr1_train.json").read_text())
    assert meta["global_step"] == 30 and meta["data_stats"]["train_examples"] == result.stats["train_examples"]
    card = (result.adapter_dir / "README.md").read_text()
    assert "library_name: peft" in card and f"base_model: {tiny_model}" in card
    assert "medr1-demo@0.1.0" in card and recipe.sha256 in card  # dataset revision and recipe
    assert f"pretrained={tiny_model},peft=" in card
    assert "library_name: transformers" in (result.merged_dir / "README.md").read_text()


def test_resume_continues_from_the_saved_step(tmp_path: Path, tiny_model: Path, demo_release: Path) -> None:
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                control.should_training_stop = True
            return control

    lora = {"dropout": 0.1}  # dropout draws random numbers: resuming must restore the RNG state too
    straight = train(_recipe(tmp_path, tiny_model, demo_release, "straight", lora=lora))
    recipe = _recipe(tmp_path, tiny_model, demo_release, "interrupted", lora=lora)
    first = train(recipe, callbacks=[StopAt()])
    assert first.global_step == 3 and first.resumed_from is None
    assert (recipe_out := Path(recipe.train.output_dir) / "checkpoint-3").is_dir()
    second = train(recipe)
    assert second.resumed_from == str(recipe_out) and second.global_step == 6
    steps_run = [h["step"] for h in second.log_history if "loss" in h]
    assert steps_run == [1, 2, 3, 4, 5, 6]  # 1-3 restored from the checkpoint's state, 4-6 trained now
    new = {h["step"]: h["loss"] for h in second.log_history if "loss" in h}
    ref = {h["step"]: h["loss"] for h in straight.log_history if "loss" in h}
    assert [round(new[s], 4) for s in (4, 5, 6)] == [round(ref[s], 4) for s in (4, 5, 6)]
    a = load_file(straight.adapter_dir / "adapter_model.safetensors")
    b = load_file(second.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    record = (second.adapter_dir / "medr1_train.json").read_bytes()
    third = train(recipe)  # the run is finished: nothing is trained and the recorded numbers stay
    assert third.global_step == 6 and third.train_loss == second.train_loss > 0
    assert (second.adapter_dir / "medr1_train.json").read_bytes() == record
