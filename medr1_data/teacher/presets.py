"""Named teachers that exist today: `teacher.preset: NAME` fills the teacher keys a recipe leaves out.

A preset is a set of defaults: every key the recipe (or `--set`) gives explicitly wins over the preset's value.
Each names the model, the kind of endpoint, the base URL (DeepSeek's API, or a local server's usual address), the
key variable, the sampling the model's authors recommend, and the server's launch line (for the README and
`medr1-data distill --list-presets`). Checked 2026-12: DeepSeek retired `deepseek-reasoner` and `deepseek-chat` as
API names on 2026-07-24; its live models are `deepseek-v4-flash` and `deepseek-v4-pro` (thinking on by default,
switched with `thinking: {type: enabled}`; `reasoning_effort: high|max`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from medr1_data.config import ConfigError

LOCAL_VLLM = "http://localhost:8000/v1"
LOCAL_SGLANG = "http://localhost:30000/v1"


@dataclass(frozen=True)
class Preset:
    """One named teacher: the teacher keys it fills, and how to start its server (empty for a hosted API)."""

    values: dict[str, Any]
    launch: tuple[str, ...] = ()
    note: str = ""
    aliases: tuple[str, ...] = field(default=())


R1_0528 = "deepseek-ai/DeepSeek-R1-0528"
DEEPSEEK_THINKING = {"thinking": {"type": "enabled"}, "reasoning_effort": "high"}

PRESETS: dict[str, Preset] = {
    "deepseek-r1-0528": Preset(
        {
            "model": R1_0528,
            "endpoint": "vllm",
            "base_url": LOCAL_VLLM,
            "api_key_env": None,
            "temperature": 0.6,  # DeepSeek's recommendation for R1: 0.5-0.7, top_p 0.95
            "top_p": 0.95,
            "max_tokens": 32768,
        },
        launch=(
            f"vllm serve {R1_0528} --tensor-parallel-size 8 --reasoning-parser deepseek_r1",
            f"python -m sglang.launch_server --model-path {R1_0528} --tp 8 --reasoning-parser deepseek-r1 "
            "--port 30000   # then base_url http://HOST:30000/v1, endpoint sglang",
        ),
        note="DeepSeek-R1-0528 (671B MoE) on your own 8-GPU node(s); vLLM on port 8000",
    ),
    "deepseek-v4-flash": Preset(
        {
            "model": "deepseek-v4-flash",
            "endpoint": "deepseek",
            "base_url": "https://api.deepseek.com",
            "api_key_env": "DEEPSEEK_API_KEY",
            "temperature": 1.0,  # ignored in thinking mode; DeepSeek recommends 1.0 / 1.0
            "top_p": 1.0,
            "max_tokens": 32768,
            "extra": DEEPSEEK_THINKING,
        },
        note="DeepSeek's API, V4 Flash with thinking (reasoning in reasoning_content)",
    ),
    "deepseek-v4-pro": Preset(
        {
            "model": "deepseek-v4-pro",
            "endpoint": "deepseek",
            "base_url": "https://api.deepseek.com",
            "api_key_env": "DEEPSEEK_API_KEY",
            "temperature": 1.0,
            "top_p": 1.0,
            "max_tokens": 32768,
            "extra": DEEPSEEK_THINKING,
        },
        note="DeepSeek's API, V4 Pro with thinking (reasoning in reasoning_content)",
    ),
    "gpt-oss-120b": Preset(
        {
            "model": "openai/gpt-oss-120b",
            "endpoint": "vllm",
            "base_url": LOCAL_VLLM,
            "api_key_env": None,
            "temperature": 1.0,  # OpenAI's recommendation for gpt-oss
            "top_p": 1.0,
            "max_tokens": 32768,
            "extra": {"reasoning_effort": "high"},
        },
        launch=("vllm serve openai/gpt-oss-120b --tensor-parallel-size 1 --reasoning-parser openai_gptoss",),
        note="gpt-oss-120b (MXFP4, one 80 GB GPU) on vLLM; reasoning effort high",
    ),
    "qwen3-235b-a22b-thinking-2507": Preset(
        {
            "model": "Qwen/Qwen3-235B-A22B-Thinking-2507",
            "endpoint": "vllm",
            "base_url": LOCAL_VLLM,
            "api_key_env": None,
            "temperature": 0.6,  # Qwen's recommendation for the thinking model: 0.6 / 0.95, top_k 20, min_p 0
            "top_p": 0.95,
            "max_tokens": 32768,
            "extra": {"top_k": 20, "min_p": 0.0},
        },
        launch=(
            "vllm serve Qwen/Qwen3-235B-A22B-Thinking-2507 --tensor-parallel-size 8 --max-model-len 262144 "
            "--reasoning-parser deepseek_r1",
        ),
        note="Qwen3-235B-A22B-Thinking-2507 on vLLM (its template pre-fills <think>: the R1 reasoning parser)",
        aliases=("Qwen3-235B-A22B-Thinking-2507",),
    ),
}


def find_preset(name: str) -> tuple[str, Preset]:
    """The preset of that name (case does not matter); a ConfigError listing the names otherwise."""
    wanted = name.strip().lower()
    for key, preset in PRESETS.items():
        if wanted == key or wanted in (a.lower() for a in preset.aliases):
            return key, preset
    raise ConfigError(f"teacher preset '{name}': no such preset (presets: {', '.join(PRESETS)})")


def expand_preset(teacher: Any, where: str = "recipe") -> Any:
    """A teacher mapping with its preset's values under the keys it gives (those win); other input unchanged.

    A teacher that lists `endpoints` takes no `base_url` from the preset (the two exclude each other)."""
    if not isinstance(teacher, dict) or not teacher.get("preset"):
        return teacher
    if not isinstance(teacher["preset"], str):
        raise ConfigError(f"{where}: teacher.preset: expected a preset name, got {teacher['preset']!r}")
    name, preset = find_preset(teacher["preset"])
    values = copy.deepcopy(preset.values)
    if teacher.get("endpoints"):
        values.pop("base_url", None)
    return {**values, **teacher, "preset": name}
