"""`medr1-train sft`: LoRA distillation of a student on a MedR1 release with TRL's SFTTrainer and peft."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medr1_data.config import missing_local_path
from medr1_train.config import RECIPES_DIR, ConfigError, SFTRecipe, load_config

ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"


@dataclass
class Result:
    """What a run left behind: where, how far it got, and the data counts."""

    output_dir: Path
    adapter_dir: Path
    merged_dir: Path | None
    global_step: int
    resumed_from: str | None
    train_loss: float | None
    stats: dict[str, Any]
    log_history: list[dict[str, Any]]
    trainer: Any = field(default=None, repr=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config RECIPE` plus any `--section.key value` overrides."""
    parser.add_argument(
        "--config",
        required=True,
        help="training recipe: a YAML file or a bundled name ("
        + ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
        + ")",
    )
    parser.add_argument("--dry-run", action="store_true", help="load and tokenise the data, print the counts, stop")
    parser.epilog = (
        "Any other --SECTION.KEY VALUE overrides the recipe, e.g. --train.max_steps 100 --lora.r 32 "
        "--data.dataset ./medr1-reasoning (a key unique to one section may drop the section: --max_steps 100)."
    )
    parser.set_defaults(overrides=[])


def init_state(recipe: SFTRecipe) -> Any:
    """The process's accelerate state; CPU processes (no GPU, or train.use_cpu) join a gloo group when launched."""
    import torch
    from accelerate import PartialState

    # The first PartialState fixes the distributed type for the whole process, so it must know about CPU-only runs
    # before anything else (transformers' Trainer included) creates one.
    return PartialState(cpu=recipe.train.use_cpu or not torch.cuda.is_available())


def _log(message: str) -> None:
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(f"[medr1-train] {message}", file=sys.stderr, flush=True)


def resolve_dtype(recipe: SFTRecipe) -> tuple[Any, bool]:
    """(torch dtype to load the base model in, whether to train in bf16 mixed precision)."""
    import torch

    on_gpu = torch.cuda.is_available() and not recipe.train.use_cpu
    name = recipe.model.dtype
    if name == "auto":
        name = "bfloat16" if on_gpu and torch.cuda.is_bf16_supported() else "float32"
    dtype = getattr(torch, name)
    return dtype, on_gpu and dtype == torch.bfloat16


def load_tokenizer(recipe: SFTRecipe) -> Any:
    """The student's tokenizer, with a pad token and the recipe's chat template (`model.chat_template`) if any."""
    from transformers import AutoTokenizer

    m = recipe.model
    if problem := missing_local_path(m.name_or_path):
        raise ConfigError(f"model.name_or_path {problem}")
    try:
        tok = AutoTokenizer.from_pretrained(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code)
    except OSError as e:
        raise ConfigError(f"model.name_or_path '{m.name_or_path}': {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if (template := recipe.chat_template()) is not None:
        tok.chat_template = template  # saved with the adapter, so the exported models format chats the same way
    return tok


def load_model(recipe: SFTRecipe, dtype: Any) -> Any:
    """The base model: on one device per process when distributed, 4-bit quantised for QLoRA."""
    import torch
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM

    m = recipe.model
    state = PartialState()
    kwargs: dict[str, Any] = {
        "revision": m.revision,
        "dtype": dtype,
        "attn_implementation": m.attn_implementation,
        "trust_remote_code": m.trust_remote_code,
    }
    if m.load_in_4bit:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigError("model.load_in_4bit (QLoRA) needs bitsandbytes: pip install bitsandbytes") from None
        if not torch.cuda.is_available():
            raise ConfigError("model.load_in_4bit (QLoRA) needs a CUDA GPU")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": state.local_process_index}
    elif state.device.type == "cuda" and state.distributed_type.value in ("NO", "MULTI_GPU"):
        kwargs["device_map"] = {"": state.device}  # straight onto this process's GPU; FSDP/DeepSpeed place it later
    try:
        return AutoModelForCausalLM.from_pretrained(m.name_or_path, **kwargs)
    except OSError as e:
        raise ConfigError(f"model.name_or_path '{m.name_or_path}': {str(e).splitlines()[0]}") from None


def lora_config(recipe: SFTRecipe) -> Any:
    """The peft LoraConfig of the recipe."""
    from peft import LoraConfig

    lo = recipe.lora
    return LoraConfig(
        r=lo.r,
        lora_alpha=lo.alpha,
        lora_dropout=lo.dropout,
        target_modules=lo.target_modules,
        use_rslora=lo.use_rslora,
        task_type="CAUSAL_LM",
    )


def sft_config(recipe: SFTRecipe, bf16: bool, has_eval: bool) -> Any:
    """TRL's SFTConfig: packing (BFD, position ids reset per example) or length-grouped batches."""
    from trl import SFTConfig

    t = recipe.train
    evaluate = has_eval and t.eval_steps is not None
    return SFTConfig(
        output_dir=t.output_dir,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a fraction of the total steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        bf16=bf16,
        fp16=False,
        activation_checkpointing=t.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=t.eval_steps if evaluate else None,
        seed=t.seed,
        data_seed=t.seed,
        report_to=t.report_to,
        dataloader_num_workers=t.dataloader_num_workers,
        use_cpu=t.use_cpu or not _cuda(),
        # The data are tokenised by medr1_train.data with the labels already masked to the assistant turn (generation
        # markers or TRL's prompt-completion split; over-length rows are dropped and counted, not truncated); TRL
        # packs them.
        max_length=recipe.data.max_length,
        packing=t.packing,
        packing_strategy="bfd",
        train_sampling_strategy="group_by_length" if (t.group_by_length and not t.packing) else "random",
        assistant_only_loss=False,
        dataset_num_proc=recipe.data.num_proc,
        ddp_find_unused_parameters=False,
        save_only_model=False,
    )


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def last_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` folder in `output_dir`, if any."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None


def build_trainer(recipe: SFTRecipe, prepared: Any, tokenizer: Any, callbacks: list | None = None) -> Any:
    """An SFTTrainer over the prepared data with a LoRA adapter on the recipe's student."""
    from trl import SFTTrainer

    dtype, bf16 = resolve_dtype(recipe)
    model = load_model(recipe, dtype)
    args = sft_config(recipe, bf16, prepared.eval is not None)
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=prepared.train,
        eval_dataset=prepared.eval,
        processing_class=tokenizer,
        peft_config=lora_config(recipe),
        callbacks=callbacks,
    )


def train(recipe: SFTRecipe, callbacks: list | None = None) -> Result:
    """Prepare the data, train (resuming from the last checkpoint when asked), save adapter, card and counts."""
    from medr1_train.data import prepare

    state = init_state(recipe)
    _log(f"processes: {state.num_processes} ({state.distributed_type.value}, device {state.device.type})")
    out = Path(recipe.train.output_dir)
    resume = last_checkpoint(recipe.train.output_dir) if recipe.train.resume else None
    done = _finished(recipe, resume)  # before the data is prepared: a finished run needs none of it
    if done is not None:
        _log(f"{out} is finished (step {done['global_step']} of this recipe): nothing to train; recorded numbers kept")
        return Result(
            output_dir=out,
            adapter_dir=out / ADAPTER_DIR,
            merged_dir=out / MERGED_DIR if (out / MERGED_DIR).is_dir() else None,
            global_step=done["global_step"],
            resumed_from=resume,
            train_loss=done.get("train_loss"),
            stats=done.get("data_stats", {}),
            log_history=done.get("log_history", []),
        )
    tokenizer = load_tokenizer(recipe)
    prepared = prepare(recipe.data, tokenizer, seed=recipe.train.seed)
    _log("data: " + ", ".join(f"{k}={v}" for k, v in prepared.stats.items()))
    trainer = build_trainer(recipe, prepared, tokenizer, callbacks)
    if resume:
        _log(f"resuming from {resume}")
    output = trainer.train(resume_from_checkpoint=resume)
    merged_dir = _save(recipe, trainer, tokenizer, prepared, output.training_loss, state)
    state.wait_for_everyone()
    _log(f"adapter saved to {out / ADAPTER_DIR} (step {trainer.state.global_step})")
    return Result(
        output_dir=out,
        adapter_dir=out / ADAPTER_DIR,
        merged_dir=merged_dir,
        global_step=trainer.state.global_step,
        resumed_from=resume,
        train_loss=output.training_loss,
        stats=prepared.stats,
        log_history=list(trainer.state.log_history),
        trainer=trainer,
    )


def _finished(recipe: SFTRecipe, checkpoint: str | None) -> dict[str, Any] | None:
    """The run's record (and its log) when this recipe's run already reached its last step, else None."""
    record = Path(recipe.train.output_dir) / ADAPTER_DIR / "medr1_train.json"
    state_file = Path(checkpoint) / "trainer_state.json" if checkpoint else None
    if state_file is None or not state_file.is_file() or not record.is_file():
        return None
    meta = json.loads(record.read_text(encoding="utf-8"))
    state = json.loads(state_file.read_text(encoding="utf-8"))
    last = state.get("max_steps") or 0
    if meta.get("recipe_sha256") != recipe.sha256 or not last or state.get("global_step", 0) < last:
        return None
    return {**meta, "log_history": state.get("log_history", [])}


def _save(recipe: SFTRecipe, trainer: Any, tokenizer: Any, prepared: Any, train_loss: float, state: Any) -> Path | None:
    """Save the adapter, tokenizer, `medr1_train.json` and card (and the merged model when asked)."""
    from medr1_train.card import write_model_card

    adapter_dir = Path(recipe.train.output_dir) / ADAPTER_DIR
    trainer.save_model(str(adapter_dir))
    if not state.is_main_process:
        return None
    tokenizer.save_pretrained(adapter_dir)
    meta = {
        "recipe": recipe.to_dict(),
        "recipe_file": recipe.source,
        "recipe_sha256": recipe.sha256,
        "dataset": prepared.dataset_ref,
        "data_stats": prepared.stats,
        "global_step": trainer.state.global_step,
        "train_loss": train_loss,
    }
    (adapter_dir / "medr1_train.json").write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
    write_model_card(
        adapter_dir,
        base_model=recipe.model.name_or_path,
        dataset_ref=prepared.dataset_ref,
        recipe=recipe.to_dict(),
        recipe_name=recipe.name,
        recipe_sha256=recipe.sha256,
        stats=prepared.stats,
        kind="adapter",
    )
    if not recipe.train.merge:
        return None
    return merge_adapter(recipe, adapter_dir, Path(recipe.train.output_dir) / MERGED_DIR)


def merge_adapter(recipe: SFTRecipe, adapter_dir: Path, out: Path) -> Path:
    """Reload the base model unquantised on CPU, merge the adapter into it and save model, tokenizer and card."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medr1_train.card import write_model_card

    dtype, _ = resolve_dtype(recipe)
    dtype = torch.bfloat16 if recipe.model.load_in_4bit else dtype
    base = AutoModelForCausalLM.from_pretrained(
        recipe.model.name_or_path,
        revision=recipe.model.revision,
        dtype=dtype,
        trust_remote_code=recipe.model.trust_remote_code,
    )
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(out)
    meta = json.loads((adapter_dir / "medr1_train.json").read_text(encoding="utf-8"))
    write_model_card(
        out,
        base_model=recipe.model.name_or_path,
        dataset_ref=meta["dataset"],
        recipe=meta["recipe"],
        recipe_name=recipe.name,
        recipe_sha256=recipe.sha256,
        stats=meta["data_stats"],
        kind="merged",
    )
    return out


def run(args: argparse.Namespace) -> int:
    """Entry point of `medr1-train sft`."""
    recipe = load_config(args.config, args.overrides)
    init_state(recipe)
    if args.dry_run:
        from medr1_train.data import prepare

        prepared = prepare(recipe.data, load_tokenizer(recipe), seed=recipe.train.seed)
        print(json.dumps({"recipe": recipe.name, "dataset": prepared.dataset_ref, **prepared.stats}, indent=2))
        return 0
    train_settings = json.dumps(dataclasses.asdict(recipe.train))
    _log(f"recipe {recipe.name} ({recipe.source}, sha256 {recipe.sha256[:12]}): {train_settings}")
    result = train(recipe)
    if result.train_loss is not None:
        _log(f"done: {result.global_step} steps, mean train loss {result.train_loss:.4f}")
    return 0
