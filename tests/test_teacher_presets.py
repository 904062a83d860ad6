"""Teachers that exist: presets, the 170k recipe's teacher, retired models, prices, the estimate's label, the
`no_thinking` selection rule, and the model name the server reported in the summary and the card."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest

from medr1_data import Medr1Error
from medr1_data.cli import build_parser, main
from medr1_data.config import ConfigError
from medr1_data.distill_cli import teacher_fields
from medr1_data.recipe import load_recipe
from medr1_data.select import SelectSettings, drop_counts, select
from medr1_data.teacher import run_distill
from medr1_data.teacher.presets import PRESETS, expand_preset
from medr1_data.teacher.prices import price_for

from .teacher_server import Reply, TeacherServer
from .test_distill_client import questions, settings, write_questions


def test_a_preset_fills_what_is_not_given_and_explicit_keys_win() -> None:
    t = expand_preset({"preset": "deepseek-v4-pro", "temperature": 0.3, "cache": "c"})
    assert (t["model"], t["endpoint"], t["base_url"], t["api_key_env"]) == (
        "deepseek-v4-pro", "deepseek", "https://api.deepseek.com", "DEEPSEEK_API_KEY",
    )  # fmt: skip
    assert t["temperature"] == 0.3 and t["cache"] == "c"
    assert t["extra"] == {"thinking": {"type": "enabled"}, "reasoning_effort": "high"}
    assert expand_preset({"preset": "QWEN3-235B-A22B-Thinking-2507"})["model"] == "Qwen/Qwen3-235B-A22B-Thinking-2507"
    assert "base_url" not in expand_preset({"preset": "gpt-oss-120b", "endpoints": [{"url": "http://a/v1"}]})
    with pytest.raises(ConfigError, match=r"teacher preset 'nope': no such preset \(presets: deepseek-r1-0528, "):
        expand_preset({"preset": "nope"})
    assert set(PRESETS) == {
        "deepseek-r1-0528", "deepseek-v4-flash", "deepseek-v4-pro", "gpt-oss-120b", "qwen3-235b-a22b-thinking-2507",
    }  # fmt: skip


def test_the_170k_recipe_points_at_a_teacher_that_exists() -> None:
    r = load_recipe("medr1-170k")
    t = r.teacher
    assert (t.model, t.endpoint, t.base_url, t.api_key_env) == (
        "deepseek-ai/DeepSeek-R1-0528", "vllm", "http://localhost:8000/v1", None,
    )  # fmt: skip
    assert t.stream and t.temperature == 0.6 and t.top_p == 0.95 and t.max_tokens == 32768
    assert r.raw["teacher"]["model"] == "deepseek-ai/DeepSeek-R1-0528"  # the preset's values are in the hash
    assert r.select.no_thinking == "drop"
    text = (Path(__file__).resolve().parents[1] / "medr1_data" / "recipes" / "medr1-170k.yaml").read_text()
    assert "--reasoning-parser deepseek_r1" in text and "--reasoning-parser deepseek-r1" in text
    v4 = load_recipe("medr1-170k", ["teacher.preset=deepseek-v4-pro"]).teacher
    assert (v4.model, v4.endpoint, v4.api_key_env) == ("deepseek-v4-pro", "deepseek", "DEEPSEEK_API_KEY")
    assert (v4.price().input_cache_miss, v4.price().output) == (1.74, 3.48)
    oss = load_recipe("medr1-170k", ["teacher.preset=gpt-oss-120b"]).teacher
    assert (oss.model, oss.temperature, oss.extra) == ("openai/gpt-oss-120b", 1.0, {"reasoning_effort": "high"})


def test_price_table_has_the_live_models_and_marks_the_retired_one() -> None:
    flash, pro = price_for("deepseek", "deepseek-v4-flash"), price_for("deepseek", "deepseek-v4-pro")
    assert (flash.input_cache_miss, flash.output, pro.input_cache_miss, pro.output) == (0.14, 0.28, 1.74, 3.48)
    assert "checked 2026-12" in flash.note and "api-docs.deepseek.com" in pro.note
    assert "retired 2026-07-24" in price_for("deepseek", "deepseek-reasoner").note
    assert price_for("vllm", "deepseek-ai/DeepSeek-R1-0528").output == 0.0


def test_a_retired_model_is_refused_before_any_request(tmp_path: Path) -> None:
    with TeacherServer() as server:
        teacher = settings(tmp_path / "c", server.url, model="deepseek-reasoner", endpoint="deepseek")
        with pytest.raises(Medr1Error, match=r"retired the API model 'deepseek-reasoner' on 2026-07-24.*deepseek-v4"):
            run_distill(questions(2), teacher, quiet=True)
        assert server.calls == []


def test_the_estimate_says_when_max_tokens_caps_the_guess(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    inp = write_questions(tmp_path / "q.parquet", 4)
    args = ["distill", str(inp), "--preset", "deepseek-v4-flash", "--max-tokens", "500", "--cache", str(tmp_path / "c")]
    assert main([*args, "--estimate"]) == 0
    out = capsys.readouterr().out
    assert "2,000 (500 each: max_tokens=500, below the 1,600 of mean of 862 real DeepSeek-R1 completions)" in out
    assert "0.0028 / 0.14 / 0.28" in out


def test_distill_options_build_the_teacher(capsys: pytest.CaptureFixture) -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["distill", "q.parquet", "--preset", "deepseek-r1-0528", "--base-url", "http://a:8000/v1",
         "--base-url", "http://b:8000/v1", "--stream", "--set", "ray.concurrency=3", "--set", "breaker_failures=2"]
    )  # fmt: skip
    f = teacher_fields(args)
    assert f["model"] == "deepseek-ai/DeepSeek-R1-0528" and f["base_url"] == ["http://a:8000/v1", "http://b:8000/v1"]
    assert f["stream"] is True and f["ray"] == {"concurrency": 3} and f["breaker_failures"] == 2
    assert f["endpoint"] == "vllm" and f["api_key_env"] is None
    plain = teacher_fields(parser.parse_args(["distill", "q.parquet", "--model", "m", "--base-url", "http://h/v1"]))
    assert (plain["endpoint"], plain["api_key_env"]) == ("openai", None)
    with pytest.raises(Medr1Error, match="--model or --preset is required"):
        teacher_fields(parser.parse_args(["distill", "q.parquet"]))
    assert main(["distill", "--list-presets"]) == 0
    listing = capsys.readouterr().out
    assert "vllm serve openai/gpt-oss-120b" in listing and "deepseek-v4-pro: deepseek-v4-pro via deepseek" in listing


def test_no_thinking_keeps_or_drops_traces_without_reasoning() -> None:
    table = pa.table(
        {
            "id": ["a", "b", "c", "d"],
            "sample_idx": [0, 0, 0, 0],
            "verify_reason": ["correct", "correct", "correct", "wrong_answer"],
            "finish_reason": ["stop"] * 4,
            "reasoning": ["Thinking it through.", None, "  ", None],
        }
    )
    kept = select(table, SelectSettings(reject_flags=[]))
    assert kept.column("drop_reason").to_pylist() == [None, None, None, "wrong_answer"]
    dropped = select(table, SelectSettings(reject_flags=[], no_thinking="drop"))
    assert dropped.column("drop_reason").to_pylist() == [None, "no_thinking", "no_thinking", "wrong_answer"]
    assert drop_counts(dropped) == {"no_thinking": 2, "wrong_answer": 1}
    with pytest.raises(ConfigError, match="no_thinking: 'maybe' is not one of keep, drop"):
        load_recipe("demo", ["select.no_thinking=maybe"])


def test_summary_and_card_name_the_model_the_server_reported(tmp_path: Path) -> None:
    from medr1_data.build import run, summary_rows

    served = "deepseek-ai/DeepSeek-R1-0528-Qwen3-8B"  # not what was asked for
    with TeacherServer(default=Reply(content="The answer is (A)."), served_model=served) as server:
        sets = [
            "teacher.endpoint=openai", f"teacher.base_url={server.url}", "teacher.api_key_env=null",
            "teacher.offline=false", f"teacher.cache={tmp_path / 'c'}", "teacher.model=asked/r1",
        ]  # fmt: skip
        b = run(load_recipe("demo", sets), tmp_path / "release", quiet=True)
    card = (tmp_path / "release" / "README.md").read_text()
    assert f"| model reported by the server | `{served}` (54 traces) — requested `asked/r1` |" in card
    assert "| model | `asked/r1` |" in card
    assert b.stats["teacher_reported"] == {served: 54}
    assert ("teacher traces", 54) in summary_rows(b)
    assert re.search(r"\| dropped: `\w+` \| \d+ \|", card)
