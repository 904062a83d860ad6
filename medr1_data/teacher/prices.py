"""Teacher price table (USD per 1M tokens) and the cost of one request from its usage.

Prices are per provider (the recipe's `teacher.endpoint`) and model: input tokens served from the provider's
prefix cache, input tokens that miss it, and output tokens (thinking included). Providers change prices: the
recipe's `price_input_cache_hit_per_m`, `price_input_per_m` and `price_output_per_m` override every entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens: input served from the provider's cache, input that misses it, and output."""

    input_cache_hit: float
    input_cache_miss: float
    output: float
    note: str = ""


DEEPSEEK_PRICING = "https://api-docs.deepseek.com/quick_start/pricing"
SELF_HOSTED = Price(0.0, 0.0, 0.0, "self-hosted: no per-token bill (set prices to spread the GPU-hours over tokens)")
# API model names that no longer answer: (provider, model) -> the date they were retired.
RETIRED = {("deepseek", "deepseek-reasoner"): "2026-07-24", ("deepseek", "deepseek-chat"): "2026-07-24"}

PRICES: dict[str, dict[str, Price]] = {
    "deepseek": {
        # DeepSeek's list prices (USD per 1M tokens, checked 2026-12 on the pricing page): V4 Flash 0.14 input (cache
        # miss) / 0.28 output, V4 Pro 1.74 / 3.48 (DeepSeek has sold Pro at a 75% discount, 0.435 / 0.87: override the
        # prices to bill at the discount); cache-hit input 0.0028 (Flash) and 0.0145 (Pro) since 2026-04-26.
        "deepseek-v4-flash": Price(
            0.0028, 0.14, 0.28, f"DeepSeek V4 Flash list price, checked 2026-12 ({DEEPSEEK_PRICING})"
        ),
        "deepseek-v4-pro": Price(
            0.0145, 1.74, 3.48, f"DeepSeek V4 Pro list price, checked 2026-12 ({DEEPSEEK_PRICING})"
        ),
        # Retired 2026-07-24 (kept to price old caches): R1's launch list price, January 2025 (standard hours).
        "deepseek-reasoner": Price(
            0.14, 0.55, 2.19, f"DeepSeek-R1 list price, January 2025; retired 2026-07-24 ({DEEPSEEK_PRICING})"
        ),
        "deepseek-chat": Price(
            0.07, 0.27, 1.10, f"DeepSeek-V3 list price, January 2025; retired 2026-07-24 ({DEEPSEEK_PRICING})"
        ),
    },
    "vllm": {"*": SELF_HOSTED},
    "sglang": {"*": SELF_HOSTED},
}


def lookup(endpoint: str, model: str) -> Price | None:
    """The table's price for a provider and model (`*` matches any model of that provider), or None."""
    models = PRICES.get(endpoint, {})
    return models.get(model) or models.get("*")


def price_for(
    endpoint: str,
    model: str,
    input_cache_hit: float | None = None,
    input_cache_miss: float | None = None,
    output: float | None = None,
) -> Price:
    """The table's price with the given overrides; without an entry, cache hits cost as much as misses, else 0."""
    base = lookup(endpoint, model)
    miss = input_cache_miss if input_cache_miss is not None else (base.input_cache_miss if base else 0.0)
    hit = input_cache_hit if input_cache_hit is not None else (base.input_cache_hit if base else miss)
    out = output if output is not None else (base.output if base else 0.0)
    overridden = any(v is not None for v in (input_cache_hit, input_cache_miss, output))
    if base and not overridden:
        note = base.note
    elif base:
        note = f"recipe prices over the table's ({base.note})"
    elif overridden:
        note = "recipe prices"
    else:
        note = f"no price known for {endpoint}/{model}: costs count as 0 (set the teacher's price_* keys)"
    return Price(hit, miss, out, note)


USAGE_TYPE = pa.struct(
    [
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("prompt_cache_hit_tokens", pa.int64()),
        ("prompt_tokens_details", pa.struct([("cached_tokens", pa.int64())])),
    ]
)


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def clean_usage(usage: Any) -> dict[str, Any] | None:
    """The usage fields the costs read, as ints or None (a server's odd types: digit strings, floats)."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else None
    return {
        "prompt_tokens": _count(usage.get("prompt_tokens")),
        "completion_tokens": _count(usage.get("completion_tokens")),
        "prompt_cache_hit_tokens": _count(usage.get("prompt_cache_hit_tokens")),
        "prompt_tokens_details": {"cached_tokens": cached} if isinstance(details, dict) else None,
    }


def token_columns(usage: pa.Array | pa.ChunkedArray) -> tuple[Any, Any, Any]:
    """(input cache hits, input cache misses, output tokens) of each row of a `USAGE_TYPE` column.

    DeepSeek reports `prompt_cache_hit_tokens`/`prompt_cache_miss_tokens`; OpenAI-style servers report
    `prompt_tokens_details.cached_tokens`; without either, every prompt token counts as a miss. A null usage is 0.
    """
    prompt = pc.fill_null(pc.struct_field(usage, "prompt_tokens"), 0)
    details = pc.struct_field(usage, "prompt_tokens_details")
    hit = pc.coalesce(pc.struct_field(usage, "prompt_cache_hit_tokens"), pc.struct_field(details, "cached_tokens"))
    hit = pc.min_element_wise(pc.fill_null(hit, 0), prompt)
    return hit, pc.subtract(prompt, hit), pc.fill_null(pc.struct_field(usage, "completion_tokens"), 0)


def cost_column(usage: pa.Array | pa.ChunkedArray, price: Price) -> Any:
    """USD of each row of a `USAGE_TYPE` column: cache-hit input, cache-miss input and output at their prices."""
    hit, miss, out = (pc.cast(c, pa.float64()) for c in token_columns(usage))
    total = pc.add(
        pc.add(pc.multiply(hit, price.input_cache_hit), pc.multiply(miss, price.input_cache_miss)),
        pc.multiply(out, price.output),
    )
    return pc.divide(total, 1e6)


def token_counts(usage: dict[str, Any] | None) -> tuple[int, int, int]:
    """(input cache hits, input cache misses, output tokens) from one OpenAI-style usage object."""
    cols = token_columns(pa.array([clean_usage(usage)], USAGE_TYPE))
    hit, miss, out = (c[0].as_py() for c in cols)
    return hit, miss, out


def cost_usd(usage: dict[str, Any] | None, price: Price) -> float:
    """Cost of one request (the same formula as `cost_column`)."""
    return cost_column(pa.array([clean_usage(usage)], USAGE_TYPE), price)[0].as_py()
