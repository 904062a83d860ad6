"""`teacher.engine: ray`: the missing requests as a Ray Dataset through `ray.data.llm`, each result into the cache.

`teacher.ray.processor: http` runs ray.data.llm's HTTP processor (`HttpRequestProcessorConfig`) against the teacher's
endpoints (servers that already run; the requests are split over them by weight); `vllm` runs vLLM engine replicas
inside Ray (`vLLMEngineProcessorConfig`: `ray.concurrency` replicas, each with `ray.engine_kwargs`, e.g.
`{tensor_parallel_size: 8}`), one per node of a GPU cluster. The driver appends every result to the response cache
(the same `CacheWriter` and record format as the plain client) as its batch reaches the driver, so a killed Ray job
resumes like the plain client: the rerun asks only for the keys the cache lacks. Responses still at the workers
when the job dies (up to `ray.batch_size` per worker) are lost and asked again. Ray is the optional extra `[ray]`.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from medr1_data import Medr1Error
from medr1_data.progress import LiveLine
from medr1_data.teacher.cache import CacheWriter, ResponseCache, lock_cache
from medr1_data.teacher.client import RunStats, _reason, api_key, record_from_body
from medr1_data.teacher.plan import Job
from medr1_data.teacher.prices import cost_usd
from medr1_data.teacher.settings import TeacherSettings, safe_url

# `teacher.extra` keys that are vLLM SamplingParams (the vllm processor passes these, the HTTP one passes every key)
VLLM_SAMPLING_KEYS = ("top_k", "min_p", "seed", "repetition_penalty", "presence_penalty", "frequency_penalty")
SYNC_INTERVAL_S = 0.05


def _import_ray() -> Any:
    try:
        import ray
        import ray.data.llm
    except ImportError as e:
        raise Medr1Error(f"teacher.engine ray needs Ray Data LLM ({e}): pip install 'medr1[ray]'") from None
    return ray


def job_rows(jobs: list[Job]) -> list[dict[str, Any]]:
    """One Dataset row per job: its key, sample index and messages (as JSON text, one Arrow string column)."""
    return [{"key": j.key, "sample_idx": j.sample_idx, "messages": orjson.dumps(j.messages).decode()} for j in jobs]


def split_by_weight(rows: list[dict[str, Any]], weights: list[float]) -> list[list[dict[str, Any]]]:
    """The rows dealt to the endpoints in proportion to their weights (each row to the one furthest behind)."""
    parts: list[list[dict[str, Any]]] = [[] for _ in weights]
    for row in rows:
        i = min(range(len(weights)), key=lambda k: ((len(parts[k]) + 1) / weights[k], k))
        parts[i].append(row)
    return parts


def http_payload(teacher: TeacherSettings, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat-completions body the HTTP processor posts (the plain client's body, without streaming)."""
    body = {
        "model": teacher.model,
        "messages": messages,
        "temperature": teacher.temperature,
        "top_p": teacher.top_p,
        "max_tokens": teacher.max_tokens,
    }
    return {**body, **teacher.extra}


def vllm_body(row: dict[str, Any], model: str, max_tokens: int) -> dict[str, Any]:
    """A vLLM engine row's output as a chat-completion body. The engine reports no finish reason: a generation
    that used all `max_tokens` is `length`, any other `stop`. The text keeps the chat template's thinking tags
    (R1's template pre-fills `<think>`), which the trace assembly splits like any inline reasoning."""
    if row.get("__inference_error__"):
        return {"error": str(row["__inference_error__"])[:300]}
    generated = int(row.get("num_generated_tokens") or 0)
    return {
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": row.get("generated_text") or ""},
                "finish_reason": "length" if generated >= max_tokens else "stop",
            }
        ],
        "usage": {"prompt_tokens": int(row.get("num_input_tokens") or 0), "completion_tokens": generated},
    }


def _http_datasets(ray: Any, rows: list[dict[str, Any]], teacher: TeacherSettings) -> list[Any]:
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    secret = api_key(teacher)
    headers = {"Authorization": f"Bearer {secret}"} if secret else None
    specs = teacher.urls()
    out = []
    for spec, part in zip(specs, split_by_weight(rows, [s.weight for s in specs]), strict=True):
        if not part:
            continue
        url, label = spec.url.rstrip("/") + "/chat/completions", safe_url(spec.url)
        config = HttpRequestProcessorConfig(
            url=url,
            headers=headers,
            batch_size=teacher.ray.batch_size,
            concurrency=spec.max_concurrency or teacher.ray.concurrency,
            max_retries=teacher.max_retries,
            base_retry_wait_time_in_s=max(teacher.backoff_s, 0.001),
        )
        processor = build_processor(
            config,
            preprocess=lambda r: {"payload": http_payload(teacher, orjson.loads(r["messages"]))},
            postprocess=lambda r, label=label: {
                "key": r["key"],
                "sample_idx": r["sample_idx"],
                "endpoint": label,
                "body": orjson.dumps(r["http_response"]).decode(),
            },
        )
        out.append(processor(ray.data.from_items(part)))
    return out


def _vllm_datasets(ray: Any, rows: list[dict[str, Any]], teacher: TeacherSettings) -> list[Any]:
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    r = teacher.ray
    source = r.model_source or teacher.model
    sampling = {"temperature": teacher.temperature, "top_p": teacher.top_p, "max_tokens": teacher.max_tokens}
    sampling |= {k: v for k, v in teacher.extra.items() if k in VLLM_SAMPLING_KEYS}
    config = vLLMEngineProcessorConfig(
        model_source=source,
        engine_kwargs=dict(r.engine_kwargs),
        concurrency=r.concurrency,
        batch_size=r.batch_size,
        should_continue_on_error=True,
    )
    processor = build_processor(
        config,
        preprocess=lambda row: {"messages": orjson.loads(row["messages"]), "sampling_params": dict(sampling)},
        postprocess=lambda row: {
            "key": row["key"],
            "sample_idx": row["sample_idx"],
            "endpoint": f"ray-vllm:{source}",
            "body": orjson.dumps(vllm_body(row, source, teacher.max_tokens)).decode(),
        },
    )
    return [processor(ray.data.from_items(rows))]


class _Sink:
    """The driver's end: each result row checked, written to the cache once, counted."""

    def __init__(self, teacher: TeacherSettings, stats: RunStats, writer: CacheWriter, jobs: list[Job]) -> None:
        self.teacher, self.stats, self.writer = teacher, stats, writer
        self.price = teacher.price()
        self.jobs = {j.key: j for j in jobs}
        self.fetched: set[str] = set()
        self.errors: dict[str, str] = {}
        self._synced = time.monotonic()

    def take(self, row: dict[str, Any]) -> None:
        job = self.jobs.get(row["key"])
        if job is None or row["key"] in self.fetched:
            return
        record, problem = record_from_body(job, self.teacher, orjson.loads(row["body"]), None, endpoint=row["endpoint"])
        st = self.stats
        st.attempts += 1
        if record is None:
            st.failed += 1
            st.failures[_reason(problem)] += 1
            self.errors[job.key] = problem
            return
        record["attempts"] = 1
        self.writer.put(record)
        self.fetched.add(job.key)
        self.errors.pop(job.key, None)
        usage = record["usage"]
        st.fetched += 1
        st.prompt_tokens += usage.get("prompt_tokens") or 0
        st.completion_tokens += usage.get("completion_tokens") or 0
        st.cost_usd += cost_usd(usage, self.price)
        if time.monotonic() - self._synced >= SYNC_INTERVAL_S:
            self.writer.sync()
            self._synced = time.monotonic()


def fetch_with_ray(
    jobs: list[Job], teacher: TeacherSettings, stats: RunStats, progress: LiveLine | None
) -> tuple[dict[str, str], set[str]]:
    """Run the jobs through ray.data.llm under the cache's lock; (the problem of each key that failed, the keys
    fetched). A job that dies midway stops the run (`stats.stopped`); what arrived is in the cache."""
    ray = _import_ray()
    cache = ResponseCache(teacher.cache)
    lock = lock_cache(cache)
    started_ray = False
    writer = CacheWriter(cache)
    sink = _Sink(teacher, stats, writer, jobs)
    try:
        if not ray.is_initialized():
            opts = {"num_cpus": teacher.ray.num_cpus} if teacher.ray.num_cpus and not teacher.ray.address else {}
            ray.init(address=teacher.ray.address, include_dashboard=False, log_to_driver=False, **opts)
            started_ray = True
        ray.data.DataContext.get_current().enable_progress_bars = False
        rows = job_rows(jobs)
        build = _vllm_datasets if teacher.ray.processor == "vllm" else _http_datasets
        parts = build(ray, rows, teacher)
        out = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
        if progress is not None:
            progress.start()
        try:
            for row in out.iter_rows():
                sink.take(row)
        except Exception as e:  # a Ray task that failed past its retries ends the job; the cache keeps what came
            stats.stopped = f"the Ray job failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
    finally:
        if progress is not None:
            progress.stop()
        writer.close()
        stats.cache_batches = writer.batches
        if started_ray:
            ray.shutdown()
        lock.release()
    return sink.errors, sink.fetched
