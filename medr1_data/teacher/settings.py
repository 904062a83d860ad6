"""The recipe's `teacher` section: model, endpoint, sampling, client limits, cache and prices."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from medr1_data import Medr1Error
from medr1_data.config import Bounds
from medr1_data.prompts import get_template
from medr1_data.teacher.prices import Price, price_for

ENDPOINTS = ("deepseek", "vllm", "sglang", "openai", "recorded")
DEFAULT_BASE_URLS = {"deepseek": "https://api.deepseek.com", "openai": "https://api.openai.com/v1"}


@dataclass
class TeacherSettings:
    """The recipe's `teacher` section: model, endpoint, sampling, client limits, cache and prices.

    Prices are USD per 1M tokens; None takes the price table's value (`medr1_data/teacher/prices.py`). `extra` holds
    extra request-body parameters (e.g. vLLM's `top_k`); when set they are sent and enter the request key.
    """

    model: str = "deepseek-reasoner"
    endpoint: str = "deepseek"  # deepseek | vllm | sglang | openai (any OpenAI-compatible server) | recorded
    base_url: str | None = None
    api_key_env: str | None = "DEEPSEEK_API_KEY"
    template: str = "medr1-mcq-v1"
    samples: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 32768
    cache: str = "cache/teacher"
    offline: bool = False
    concurrency: int = 16
    request_timeout: float = 1800.0
    max_retries: int = 6
    backoff_s: float = 1.0
    backoff_max_s: float = 120.0
    price_input_cache_hit_per_m: float | None = None
    price_input_per_m: float | None = None
    price_output_per_m: float | None = None
    expected_completion_tokens: int | None = None
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    BOUNDS: ClassVar[Bounds] = {
        "samples": (1, None),
        "temperature": (0.0, 2.0),
        "top_p": (0.0, 1.0),
        "max_tokens": (1, None),
        "concurrency": (1, None),
        "request_timeout": (0.001, None),
        "max_retries": (0, None),
        "backoff_s": (0.0, None),
        "backoff_max_s": (0.0, None),
        "price_input_cache_hit_per_m": (0.0, None),
        "price_input_per_m": (0.0, None),
        "price_output_per_m": (0.0, None),
        "expected_completion_tokens": (1, None),
    }
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"endpoint": ENDPOINTS}

    def sampling(self) -> dict[str, Any]:
        """The sampling parameters that enter the request key."""
        out = {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    def public(self) -> dict[str, Any]:
        """Settings safe to print in cards and reports (names of environment variables, never their values)."""
        return asdict(self)

    def price(self) -> Price:
        """The price table's entry for this endpoint and model, with the recipe's overrides."""
        return price_for(
            self.endpoint,
            self.model,
            self.price_input_cache_hit_per_m,
            self.price_input_per_m,
            self.price_output_per_m,
        )

    def url(self) -> str:
        """The endpoint's base URL (DeepSeek's and OpenAI's have defaults)."""
        url = self.base_url or DEFAULT_BASE_URLS.get(self.endpoint)
        if not url:
            raise Medr1Error(
                f"teacher endpoint '{self.endpoint}' needs a base_url (e.g. http://localhost:8000/v1 for vLLM)"
            )
        return url

    def check(self) -> None:
        """Raise Medr1Error on settings that cannot work."""
        if self.endpoint not in ENDPOINTS:
            raise Medr1Error(f"teacher endpoint '{self.endpoint}': expected one of {', '.join(ENDPOINTS)}")
        for name in ("samples", "concurrency", "max_tokens"):
            if int(getattr(self, name)) < 1:
                raise Medr1Error(f"teacher {name} must be at least 1, got {getattr(self, name)}")
        if self.max_retries < 0 or self.request_timeout <= 0:
            raise Medr1Error("teacher max_retries must be >= 0 and request_timeout > 0")
        get_template(self.template)
