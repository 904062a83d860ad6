"""The teacher: settings and presets, request plan, response cache, HTTP client over one or many endpoints (plain or
streamed; or Ray Data LLM), trace assembly, estimate and the distill stage.

One request per (question, sample index), keyed by `request_key`; a response that arrived is appended to the cache
at once and never requested again. `distill` is the build's stage; `run_distill` also returns the run's counters.
"""

from medr1_data.teacher.cache import CACHE_FILE, ERRORS_FILE, ResponseCache, cache_record, lock_cache
from medr1_data.teacher.client import KEY_HEADER, RunStats, retry_after
from medr1_data.teacher.estimate import estimate
from medr1_data.teacher.plan import Plan, plan_requests, request_key
from medr1_data.teacher.presets import PRESETS
from medr1_data.teacher.run import DistillResult, distill, require_complete, run_distill
from medr1_data.teacher.settings import ENDPOINTS, EndpointSpec, RaySettings, TeacherSettings
from medr1_data.teacher.traces import split_reasoning

__all__ = [
    "CACHE_FILE",
    "ENDPOINTS",
    "ERRORS_FILE",
    "KEY_HEADER",
    "PRESETS",
    "DistillResult",
    "EndpointSpec",
    "Plan",
    "RaySettings",
    "ResponseCache",
    "RunStats",
    "TeacherSettings",
    "cache_record",
    "distill",
    "estimate",
    "lock_cache",
    "plan_requests",
    "request_key",
    "require_complete",
    "retry_after",
    "run_distill",
    "split_reasoning",
]
