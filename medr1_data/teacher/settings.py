"""The recipe's `teacher` section: model, endpoints, sampling, client limits, engine, cache and prices."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from medr1_data import Medr1Error
from medr1_data.config import Bounds, check_limits
from medr1_data.prompts import get_template
from medr1_data.teacher.prices import Price, price_for

ENDPOINTS = ("deepseek", "vllm", "sglang", "openai", "recorded", "dataset")
ENGINES = ("client", "ray")
RAY_PROCESSORS = ("http", "vllm")
DEFAULT_BASE_URLS = {"deepseek": "https://api.deepseek.com", "openai": "https://api.openai.com/v1"}


@dataclass
class EndpointSpec:
    """One server of the teacher: its base URL, its share of the requests (`weight`) and its own cap on requests
    in flight (`max_concurrency`, None: no cap beyond the teacher's `concurrency`)."""

    url: str
    weight: float = 1.0
    max_concurrency: int | None = None

    BOUNDS: ClassVar[Bounds] = {"weight": (0.001, None), "max_concurrency": (1, None)}


@dataclass
class RaySettings:
    """`teacher.ray`: how `engine: ray` runs (`medr1_data/teacher/ray_engine.py`).

    processor `http`: ray.data.llm's HTTP processor against the teacher's endpoints (servers that already run);
    `vllm`: vLLM engine replicas started by Ray (`vLLMEngineProcessorConfig`, one per `concurrency`, each with
    `engine_kwargs`, e.g. {tensor_parallel_size: 8}, loading `model_source`, default the teacher's model).
    """

    processor: str = "http"
    address: str | None = None  # ray.init address: None starts or joins a local Ray, "auto" joins a cluster
    concurrency: int = 1  # HTTP actors per endpoint, or vLLM engine replicas
    batch_size: int = 8  # rows per Ray batch: results reach the driver (and the cache) a batch at a time
    model_source: str | None = None
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    num_cpus: int | None = None  # CPUs of a local Ray (None: Ray's default)

    BOUNDS: ClassVar[Bounds] = {"concurrency": (1, None), "batch_size": (1, None), "num_cpus": (1, None)}
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"processor": RAY_PROCESSORS}


@dataclass
class TeacherSettings:
    """The recipe's `teacher` section: model, endpoints, sampling, client limits, engine, cache and prices.

    Prices are USD per 1M tokens; None takes the price table's value (`medr1_data/teacher/prices.py`). `extra` holds
    extra request-body parameters (e.g. vLLM's `top_k`); when set they are sent and enter the request key.
    `preset` names a bundled teacher (`medr1_data/teacher/presets.py`) whose values fill the keys a recipe leaves out.
    """

    model: str = "deepseek-ai/DeepSeek-R1-0528"
    endpoint: str = "vllm"  # deepseek | vllm | sglang | openai (any OpenAI-compatible server) | recorded
    base_url: str | list[str] | None = None
    endpoints: list[EndpointSpec] = field(default_factory=list)
    api_key_env: str | None = None
    preset: str | None = None
    spec: str | None = None  # endpoint dataset: the dataset whose traces fill the cache (as `medr1-data audit` SPEC)
    spec_split: str = "train"  # endpoint dataset: the split of a Hub dataset
    template: str = "medr1-mcq-v1"
    samples: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 32768
    cache: str = "cache/teacher"
    offline: bool = False
    engine: str = "client"  # client: the asyncio HTTP client; ray: ray.data.llm (teacher.ray)
    concurrency: int = 16
    request_timeout: float = 1800.0
    stream: bool = False
    stall_timeout: float = 300.0  # streaming: a request silent this long is cancelled and retried
    max_retries: int = 6
    backoff_s: float = 1.0
    backoff_max_s: float = 120.0
    breaker_failures: int = 5  # consecutive failures that pause an endpoint (with two or more endpoints)
    breaker_cooldown_s: float = 30.0  # how long a paused endpoint rests before one probe request
    price_input_cache_hit_per_m: float | None = None
    price_input_per_m: float | None = None
    price_output_per_m: float | None = None
    expected_completion_tokens: int | None = None
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    ray: RaySettings = field(default_factory=RaySettings)

    BOUNDS: ClassVar[Bounds] = {
        "samples": (1, None),
        "temperature": (0.0, 2.0),
        "top_p": (0.0, 1.0),
        "max_tokens": (1, None),
        "concurrency": (1, None),
        "request_timeout": (0.001, None),
        "stall_timeout": (0.001, None),
        "max_retries": (0, None),
        "backoff_s": (0.0, None),
        "backoff_max_s": (0.0, None),
        "breaker_failures": (1, None),
        "breaker_cooldown_s": (0.0, None),
        "price_input_cache_hit_per_m": (0.0, None),
        "price_input_per_m": (0.0, None),
        "price_output_per_m": (0.0, None),
        "expected_completion_tokens": (1, None),
    }
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"endpoint": ENDPOINTS, "engine": ENGINES}

    def sampling(self) -> dict[str, Any]:
        """The sampling parameters that enter the request key."""
        out = {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    def public(self) -> dict[str, Any]:
        """Settings safe to print in cards and reports (names of environment variables, never their values)."""
        out = asdict(self)
        out["base_url"] = [safe_url(e.url) for e in self.urls()] if self.base_url or self.endpoints else None
        out["endpoints"] = [{**e, "url": safe_url(e["url"])} for e in out["endpoints"]]
        return out

    def price(self) -> Price:
        """The price table's entry for this endpoint and model, with the recipe's overrides."""
        return price_for(
            self.endpoint,
            self.model,
            self.price_input_cache_hit_per_m,
            self.price_input_per_m,
            self.price_output_per_m,
        )

    def urls(self) -> list[EndpointSpec]:
        """Every endpoint of the teacher: `endpoints`, else each `base_url`, else the provider's default URL."""
        if self.endpoints:
            return list(self.endpoints)
        given = [self.base_url] if isinstance(self.base_url, str) else list(self.base_url or [])
        if not given and self.endpoint in DEFAULT_BASE_URLS:
            given = [DEFAULT_BASE_URLS[self.endpoint]]
        if not given:
            raise Medr1Error(
                f"teacher endpoint '{self.endpoint}' needs a base_url (e.g. http://localhost:8000/v1 for vLLM)"
            )
        return [EndpointSpec(u) for u in given]

    def url(self) -> str:
        """The first endpoint's base URL (DeepSeek's and OpenAI's have defaults)."""
        return self.urls()[0].url

    def check(self) -> None:
        """Raise Medr1Error on settings that cannot work."""
        check_limits(self, "teacher")  # the same BOUNDS/CHOICES a recipe's values are checked against
        if self.endpoints and self.base_url:
            raise Medr1Error("teacher: set either base_url or endpoints, not both")
        get_template(self.template)


def safe_url(url: str) -> str:
    """A URL without user, password, query or fragment (what a cache record or a card may show)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
