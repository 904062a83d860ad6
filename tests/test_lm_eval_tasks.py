"""The MedR1 lm-eval tasks: real benchmark files, the answer filter on real R1 completions, end-to-end runs."""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is in the eval extra")

from lm_eval.api.instance import Instance

from medr1_data.answers import extract
from medr1_data.lm_eval_tasks import GROUPS, MAJ_TASKS, MC_TASKS, TASKS, task_dir, task_manager
from medr1_data.lm_eval_tasks.cli import with_include_path
from medr1_data.prompts import get_template

from .conftest import FIXTURES, ROOT
from .real_traces import load_real_traces
from .teacher_server import Reply, TeacherServer

COUNTS = {"medr1_medqa": 1273, "medr1_medmcqa": 4183, "medr1_pubmedqa": 500, "medr1_mmlu_medical": 1089}
HEADQA_FIXTURE_ROWS = 3  # ../shared has no HEAD-QA file: the source fixture stands in for the English test split
TEMPLATE = get_template("medr1-mcq-v1")


@pytest.fixture
def bench(shared_data: Path, tmp_path: Path) -> Path:
    """A benchmark folder laid out like ../shared/data/benchmarks, plus HEAD-QA from the source fixture."""
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    for item in (shared_data / "benchmarks").iterdir():
        (folder / item.name).symlink_to(item)
    (folder / "headqa_en").mkdir()
    shutil.copy(FIXTURES / "sources" / "headqa" / "train_HEAD_EN.json", folder / "headqa_en" / "test_HEAD_EN.json")
    return folder


def _as_json(messages: list[dict], add_generation_prompt: bool = True) -> str:
    assert add_generation_prompt
    return json.dumps(messages)


def _messages(doc: dict) -> list[dict]:
    return TEMPLATE.messages(doc["question"], doc["options"], doc["context"])


def test_each_task_loads_its_real_file_with_the_exact_count(bench: Path) -> None:
    tm = task_manager(include_defaults=False, metadata={"benchmark_dir": str(bench)})
    assert set(tm.all_tasks) == {*TASKS, *MC_TASKS, *MAJ_TASKS, *GROUPS}
    loaded = tm.load([*TASKS, *MC_TASKS, *MAJ_TASKS])["tasks"]
    for name in TASKS:
        gen, mc = loaded[name], loaded[f"{name}_mc"]
        expected = COUNTS.get(name, HEADQA_FIXTURE_ROWS)
        assert len(gen.eval_docs) == len(mc.eval_docs) == expected, name
        kwargs = gen.config.generation_kwargs
        assert gen.OUTPUT_TYPE == "generate_until" and mc.OUTPUT_TYPE == "multiple_choice"
        assert kwargs["until"] and "\n\n" not in kwargs["until"] and kwargs["max_gen_toks"] == 8192
        assert [m["metric"] for m in gen.config.metric_list] == ["acc", "truncated", "no_answer"]
        assert (
            gen.config.repeats == 1 and [f["function"] for f in gen.config.filter_list[0]["filter"]][1] == "take_first"
        )
        maj = loaded[f"{name}_maj8"]
        assert len(maj.eval_docs) == expected and maj.config.repeats == 8
        assert [m["metric"] for m in maj.config.metric_list] == ["maj_acc", "avg_acc", "truncated", "no_answer"]
        sampling = maj.config.generation_kwargs
        assert sampling["do_sample"] and sampling["temperature"] == 0.6 and sampling["max_gen_toks"] == 8192
        # The chat prompt is exactly the training template's system + user messages.
        doc = gen.eval_docs[len(gen.eval_docs) // 2]
        sent = json.loads(gen.fewshot_context(doc, 0, apply_chat_template=True, chat_template=_as_json))
        assert sent == _messages(doc)
        assert mc.doc_to_choice(doc)[mc.doc_to_target(doc)] == doc["answer_label"]
    pubmed = loaded["medr1_pubmedqa"].eval_docs[0]
    assert pubmed["context"] and pubmed["context"][:80] in loaded["medr1_pubmedqa"].doc_to_text(pubmed)
    assert [o["text"] for o in pubmed["options"]] == ["yes", "no", "maybe"]


def test_group_is_size_weighted_over_the_five_tasks(bench: Path) -> None:
    tm = task_manager(include_defaults=False, metadata={"benchmark_dir": str(bench)})
    group = next(iter(tm.load(["medr1"])["groups"].values()))
    assert sorted(t.task_name for t in group.get_all_tasks()) == sorted(TASKS)
    assert {(m.metric, m.weight_by_size, tuple(m.filter_list)) for m in group.aggregate_metric_list} == {
        ("acc", True, ("committed",)),
        ("truncated", True, ("committed",)),
        ("no_answer", True, ("committed",)),
    }
    maj = next(iter(tm.load(["medr1_maj8"])["groups"].values()))
    assert sorted(t.task_name for t in maj.get_all_tasks()) == sorted(MAJ_TASKS)
    assert {m.metric for m in maj.aggregate_metric_list} == {"maj_acc", "avg_acc", "truncated", "no_answer"}


def test_benchmark_folder_from_environment_and_single_file_from_metadata(
    bench: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDR1_BENCHMARK_DIR", str(bench))
    task = task_manager(include_defaults=False).load(["medr1_medqa"])["tasks"]["medr1_medqa"]
    assert len(task.eval_docs) == 1273
    monkeypatch.delenv("MEDR1_BENCHMARK_DIR")
    one = FIXTURES / "sources" / "medqa" / "train.jsonl"
    task = task_manager(include_defaults=False, metadata={"medqa_us_test": str(one)}).load(["medr1_medqa"])
    assert len(task["tasks"]["medr1_medqa"].eval_docs) == sum(1 for line in one.open() if line.strip())


def _trace_docs(table) -> list[dict]:
    return [
        {"question": r["question"], "options": r["options"], "answer_label": r["answer_label"], "context": None}
        for r in table.select(["question", "options", "answer_label"]).to_pylist()
    ]


def test_filter_chain_scores_real_r1_completions_exactly(shared_data: Path, bench: Path) -> None:
    docs = _trace_docs(load_real_traces(shared_data / "traces"))
    raw = [
        row for p in sorted((shared_data / "traces").glob("deepseek_r1_*.json")) for row in json.loads(p.read_text())
    ]
    assert [r["question"] for r in raw] == [d["question"] for d in docs]
    completions = [r["completion"] for r in raw]
    assert len(completions) == 862
    task = task_manager(include_defaults=False, metadata={"benchmark_dir": str(bench)}).load(["medr1_medqa"])
    task = task["tasks"]["medr1_medqa"]
    instances = [
        Instance("generate_until", doc, ("", {}), idx=0, metadata=("medr1_medqa", i, 1), resps=[c])
        for i, (doc, c) in enumerate(zip(docs, completions, strict=True))
    ]
    task._instances = instances
    task.apply_filters()
    scores = [
        task.process_results(d, [inst.filtered_resps["committed"]]) for d, inst in zip(docs, instances, strict=True)
    ]
    accuracy = sum(s["acc"] for s in scores) / len(scores)

    # Independently: the answer after the last </think> (none where the thinking never closed), vs the gold label.
    right = agree = 0
    for doc, row in zip(docs, raw, strict=True):
        completion = row["completion"]
        label = extract(completion.split("</think>")[-1], doc["options"]).label if "</think>" in completion else None
        right += label == row["answer_idx"]
        agree += label == row["predicted_answer"]
    assert accuracy == right / 862
    assert 0.2 < accuracy < 0.45  # hard subsets: R1 is right on 13-47% per file (../shared/data/README.md)
    assert agree / 862 >= 0.97  # and reads what the benchmark's own parser read
    # 11 completions never closed their thinking and one names four labels ("D,F,G,I"): no answer.
    assert sum(s["no_answer"] for s in scores) == 862 - sum("</think>" in c for c in completions) + 1 == 12
    # No tokenizer here: whether a generation hit max_gen_toks is unknown, not guessed.
    assert all(math.isnan(s["truncated"]) for s in scores)


@pytest.mark.parametrize(
    ("completion", "label"),
    [
        ("<think>So the answer is A.</think>\n<answer>C</answer>", "C"),  # thinking never read
        ("<think>The answer is B, wait, D.</think>The answer is D.</think>\n<answer>B</answer>", "B"),  # last close
        ("<think>Long thinking, the answer is A, cut off here", None),  # never closed: no answer yet
        ("Pre-filled <think>: only the close comes back.\n</think>\n\n**Answer: C**", "C"),
        ("No thinking at all. The answer is D.", "D"),
    ],
)
def test_reading_strips_thinking_before_the_shared_extractor(completion: str, label: str | None) -> None:
    from medr1_data.lm_eval_tasks.utils import INVALID, read

    options = [{"label": x, "text": t} for x, t in zip("ABCD", ["one", "two", "three", "four"], strict=True)]
    got = read(completion, options)
    assert str(got) == (label or INVALID) and got.response == completion
    assert copy.deepcopy(got) == got and copy.deepcopy(got).response == completion  # lm-eval deep-copies it


class _WordTokenizer:
    """One token per whitespace-separated word: enough to count a generation against its budget."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": list(range(len(text.split())))}


def test_a_generation_cut_off_before_closing_its_thinking_gets_no_credit() -> None:
    from medr1_data.lm_eval_tasks.utils import process_results

    doc = {"options": [{"label": x, "text": t} for x, t in zip("AB", ["one", "two"], strict=True)], "answer_label": "A"}
    tok = _WordTokenizer()
    prefilled_cut = "Thinking under a pre-filled think tag: the answer is A, probably, but let me check"  # 15 words
    cut = {"acc": 0.0, "truncated": 1.0, "no_answer": 0.0}
    assert process_results(doc, [prefilled_cut], max_gen_toks=16, tokenizer=tok) == cut
    # The same text within budget is a committed answer; a cut-off one that closed its thinking keeps its answer.
    within = {"acc": 1.0, "truncated": 0.0, "no_answer": 0.0}
    assert process_results(doc, [prefilled_cut], max_gen_toks=64, tokenizer=tok) == within
    closed_cut = "</think> The answer is A. " + "and more " * 7
    kept = {"acc": 1.0, "truncated": 1.0, "no_answer": 0.0}
    assert process_results(doc, [closed_cut], max_gen_toks=16, tokenizer=tok) == kept
    # Committing to nothing is counted apart from being wrong; a pasted option list commits to nothing.
    pasted = "A. one\nB. two"
    assert process_results(doc, [pasted], max_gen_toks=16, tokenizer=tok) == {
        "acc": 0.0,
        "truncated": 0.0,
        "no_answer": 1.0,
    }


def test_without_a_tokenizer_truncated_is_unknown_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    from medr1_data.lm_eval_tasks import utils

    doc = {"options": [{"label": x, "text": t} for x, t in zip("AB", ["one", "two"], strict=True)], "answer_label": "A"}
    utils._warned_unknown = False
    with caplog.at_level(logging.WARNING, logger="medr1.lm_eval"):
        got = utils.process_results(doc, ["<think>never closed, the answer is A"], max_gen_toks=8, tokenizer=None)
    assert got["acc"] == 0.0 and got["no_answer"] == 1.0 and math.isnan(got["truncated"])
    assert "unknown rather than guessed" in caplog.text


def test_an_api_model_alias_is_never_looked_up_as_a_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    """`model=NAME` of local-chat-completions names the served model, not a tokenizer: no lookup, no guess."""
    asked: list[str] = []
    task = task_manager(
        include_defaults=False, metadata={"medqa_us_test": str(FIXTURES / "sources" / "medqa" / "train.jsonl")}
    )
    task = task.load(["medr1_medqa"])["tasks"]["medr1_medqa"]
    # lm-eval imports utils.py under its own module name: patch the module the task really uses.
    monkeypatch.setitem(type(task).tokenizer.__globals__, "_tokenizer", lambda name: asked.append(name) or None)
    task.config.metadata = {"model": "Qwen/Qwen2.5-7B-Instruct", "base_url": "http://localhost:8000/v1"}
    assert task.tokenizer() is None and asked == []
    task.config.metadata = {"model": "alias", "tokenizer": "/models/qwen"}
    task.tokenizer()
    assert asked == ["/models/qwen"]


def test_cli_adds_include_path_and_passes_everything_else_through() -> None:
    ours = str(task_dir())
    argv = ["--model", "hf", "--tasks", "medr1", "--gen_kwargs", "max_gen_toks=2048", "--metadata", '{"a": 1}']
    assert with_include_path(argv) == ["--include_path", ours, *argv]
    assert with_include_path(["run", *argv]) == ["run", "--include_path", ours, *argv]
    assert with_include_path(["ls", "tasks"]) == ["ls", "--include_path", ours, "tasks"]
    mine = ["--include_path", "/my/tasks", *argv]
    assert with_include_path(mine) == mine  # the user's path stays; main() adds ours to the TaskManager instead
    out = subprocess.run(
        [sys.executable, "-m", "medr1_data.cli", "lm-eval-path"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == ours and (Path(ours) / "medr1.yaml").is_file()


def _gen_samples(results: dict, task: str) -> list[dict]:
    return sorted(results["samples"][task], key=lambda s: s["doc_id"])


def _check_samples(samples: list[dict], tokenizer, max_gen_toks: int) -> None:
    """Prompts are the training template through the model's chat template; acc is read from the generation."""
    from medr1_data.lm_eval_tasks.utils import read

    for s in samples:
        prompt, gen_kwargs = s["arguments"][0]
        expected = tokenizer.apply_chat_template(_messages(s["doc"]), tokenize=False, add_generation_prompt=True)
        assert prompt == expected
        assert gen_kwargs["max_gen_toks"] == max_gen_toks and gen_kwargs["until"]
        label = str(read(s["resps"][0][0], s["doc"]["options"]))
        assert s["filtered_resps"][0] == label and s["acc"] == float(label == s["doc"]["answer_label"])


def test_python_task_manager_runs_the_tiny_model_end_to_end(tiny_model: Path, bench: Path) -> None:
    import lm_eval
    from transformers import AutoTokenizer

    tm = task_manager(include_defaults=False, metadata={"benchmark_dir": str(bench), "pretrained": str(tiny_model)})
    res = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={tiny_model},dtype=float32",
        tasks=["medr1_medqa", "medr1_pubmedqa", "medr1_medqa_mc"],
        limit=2,
        apply_chat_template=True,
        gen_kwargs="max_gen_toks=12",
        task_manager=tm,
        log_samples=True,
        device="cpu",
        batch_size=2,
    )
    tok = AutoTokenizer.from_pretrained(tiny_model)
    for task in ("medr1_medqa", "medr1_pubmedqa"):
        samples = _gen_samples(res, task)
        assert len(samples) == 2
        _check_samples(samples, tok, 12)
        # A random-weight model never stops on its own: every generation used the whole budget.
        n_tokens = [len(tok(s["resps"][0][0], add_special_tokens=False)["input_ids"]) for s in samples]
        assert [s["truncated"] for s in samples] == [float(n >= 11) for n in n_tokens]
        metrics = res["results"][task]
        assert metrics["acc,committed"] == sum(s["acc"] for s in samples) / 2
        assert metrics["truncated,committed"] == sum(s["truncated"] for s in samples) / 2
    assert res["results"]["medr1_medqa_mc"]["acc,none"] in (0.0, 0.5, 1.0)
    assert res["configs"]["medr1_medqa"]["generation_kwargs"]["max_gen_toks"] == 12


def _results_file(out: Path) -> dict:
    files = sorted(out.rglob("results_*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_medr1_eval_console_script_runs_the_group(tiny_model: Path, bench: Path, tmp_path: Path) -> None:
    from medr1_data.lm_eval_tasks.cli import main

    args = [
        "--model", "hf", "--model_args", f"pretrained={tiny_model},dtype=float32", "--tasks", "medr1",
        "--limit", "1", "--apply_chat_template", "--gen_kwargs", "max_gen_toks=8", "--device", "cpu",
        "--metadata", json.dumps({"benchmark_dir": str(bench)}), "--output_path", str(tmp_path / "out"),
    ]  # fmt: skip
    assert main(args) == 0
    res = _results_file(tmp_path / "out")
    group = res["results"]["medr1"]
    assert group["sample_len"] == 5 and set(res["results"]) == {"medr1", *TASKS}
    per_task = [res["results"][t] for t in TASKS]
    assert group["acc,committed"] == pytest.approx(sum(r["acc,committed"] for r in per_task) / 5)
    assert group["truncated,committed"] == pytest.approx(sum(r["truncated,committed"] for r in per_task) / 5)
    assert all(res["configs"][t]["generation_kwargs"]["max_gen_toks"] == 8 for t in TASKS)


def test_plain_lm_eval_with_the_include_path(tiny_model: Path, bench: Path, tmp_path: Path) -> None:
    script = (
        f'"{sys.executable}" -m lm_eval --include_path "$("{sys.executable}" -m medr1_data.cli lm-eval-path)" '
        f"--model hf --model_args pretrained={tiny_model},dtype=float32 --tasks medr1_pubmedqa,medr1_mmlu_medical_mc "
        f"--limit 1 --apply_chat_template --gen_kwargs max_gen_toks=8 --device cpu --output_path {tmp_path / 'out'} "
        f"--metadata '{json.dumps({'benchmark_dir': str(bench)})}'"
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    res = _results_file(tmp_path / "out")["results"]
    assert res["medr1_pubmedqa"]["sample_len"] == res["medr1_mmlu_medical_mc"]["sample_len"] == 1
    assert {"acc,committed", "truncated,committed"} <= set(res["medr1_pubmedqa"])
    assert {"acc,none", "acc_norm,none"} <= set(res["medr1_mmlu_medical_mc"])


def test_local_chat_completions_against_an_openai_compatible_server(tiny_model: Path, bench: Path) -> None:
    import lm_eval
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    tm = task_manager(include_defaults=False, metadata={"benchmark_dir": str(bench)})
    docs = list(tm.load(["medr1_medqa"])["tasks"]["medr1_medqa"].eval_docs.select(range(4)))
    runaway = "<think>" + " ".join(["the patient presents with chest pain and fever"] * 60)
    seen: list[dict] = []

    def answer(body: dict) -> Reply:
        """Doc 0 right (a wrong answer in its thinking), 1 wrong, 2 right after a pre-filled <think>, 3 runs away."""
        seen.append(body)
        i = next(i for i, d in enumerate(docs) if d["question"].strip() in body["messages"][-1]["content"])
        gold = docs[i]["answer_label"]
        wrong = next(o["label"] for o in docs[i]["options"] if o["label"] != gold)
        if i == 3:  # the server honours max_tokens, as a real one does, and reports `length`
            ids = tok(runaway, add_special_tokens=False)["input_ids"][: body["max_tokens"]]
            return Reply(shape="none", content=tok.decode(ids), finish_reason="length")
        reasoning = f"Maybe the answer is {wrong}. Checking the vitals."
        return {
            0: Reply(shape="inline", reasoning=reasoning, content=f"<answer>{gold}</answer>"),
            1: Reply(shape="inline", reasoning=reasoning, content=f"<answer>{wrong}</answer>"),
            2: Reply(shape="prefilled", reasoning=reasoning, content=f"The answer is {gold}."),
        }[i]

    with TeacherServer(default=answer) as server:
        res = lm_eval.simple_evaluate(
            model="local-chat-completions",
            model_args=f"model=medr1-stub,base_url={server.url}/chat/completions,tokenizer={tiny_model},max_retries=1",
            tasks=["medr1_medqa"],
            limit=4,
            apply_chat_template=True,
            gen_kwargs="max_gen_toks=96",
            task_manager=task_manager(
                include_defaults=False, metadata={"benchmark_dir": str(bench), "tokenizer": str(tiny_model)}
            ),
            log_samples=True,
        )
    assert len(seen) == 4
    for body in seen:
        doc = next(d for d in docs if d["question"].strip() in body["messages"][-1]["content"])
        assert body["messages"] == _messages(doc)  # system prompt + user turn, as in training
        assert body["max_tokens"] == 96 and body["stop"] and body["temperature"] == 0
    samples = _gen_samples(res, "medr1_medqa")
    assert [s["acc"] for s in samples] == [1.0, 0.0, 1.0, 0.0]
    assert [s["truncated"] for s in samples] == [0.0, 0.0, 0.0, 1.0]
    assert res["results"]["medr1_medqa"]["acc,committed"] == 0.5
    assert res["results"]["medr1_medqa"]["truncated,committed"] == 0.25


# --------------------------------------------------------------------------------------------------- maj@k


MEDQA_FIXTURE = FIXTURES / "sources" / "medqa" / "train.jsonl"


def _fixture_task(name: str, **metadata: str):
    tm = task_manager(include_defaults=False, metadata={"medqa_us_test": str(MEDQA_FIXTURE), **metadata})
    return tm.load([name])["tasks"][name]


def test_offline_tokenizer_lookup_is_local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers", reason="transformers is in the eval extra")
    import transformers

    from medr1_data.lm_eval_tasks import utils

    calls: list[dict] = []

    def fake(name: str, **kw: object) -> None:
        calls.append({"name": name, **kw})
        raise OSError(f"{name} is not a local folder")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake)
    utils._tokenizer.cache_clear()
    assert utils._tokenizer("some-org/some-model") is None  # HF_HUB_OFFLINE=1 (conftest): no Hub request at all
    assert calls == [{"name": "some-org/some-model", "local_files_only": True}]
    utils._tokenizer.cache_clear()


def test_repeats_compose_with_the_majority_filter() -> None:
    """lm-eval gives each instance its k generations; CommittedAnswer → MajorityAnswer → take_first yields one Vote."""
    task = _fixture_task("medr1_medqa_maj8")
    module = type(task).process_results.__globals__  # utils.py as lm-eval imported it (its own module name)
    INVALID, Vote, process_results = module["INVALID"], module["Vote"], module["process_results"]
    docs = list(task.eval_docs)
    assert len(docs) == 3 and task.config.repeats == 8
    golds = [d["answer_label"] for d in docs]
    wrong = [next(o["label"] for o in d["options"] if o["label"] != g) for d, g in zip(docs, golds, strict=True)]
    generations = [
        # 3 right, 4 wrong, 1 no answer: the wrong label wins the vote
        [f"<answer>{golds[0]}</answer>"] * 3 + [f"The answer is {wrong[0]}."] * 4 + ["I cannot decide."],
        # 3 right, 2 wrong, 3 no answer (one a pasted option list): no answer does not vote, the gold label wins
        [f"<answer>{golds[1]}</answer>"] * 3 + [f"\\boxed{{{wrong[1]}}}"] * 2 + ["", "<think>still", "A. x\nB. y"],
        # a 2-2 tie: the label reached first wins
        [f"Answer: {wrong[2]}", f"Answer: {golds[2]}", f"Answer: {golds[2]}", f"Answer: {wrong[2]}"] + ["Hmm."] * 4,
    ]
    task._instances = [
        Instance("generate_until", doc, ("", {}), idx=0, metadata=("medr1_medqa_maj8", i, 8), resps=list(g))
        for i, (doc, g) in enumerate(zip(docs, generations, strict=True))
    ]
    task.apply_filters()
    votes = [inst.filtered_resps["committed"] for inst in task.instances]
    assert all(isinstance(v, Vote) and len(v.samples) == 8 for v in votes)
    assert [str(v) for v in votes] == [wrong[0], golds[1], wrong[2]]
    assert copy.deepcopy(votes[1]) == votes[1] and len(copy.deepcopy(votes[1]).samples) == 8
    tok = _WordTokenizer()
    got = [process_results(d, [v], max_gen_toks=100, tokenizer=tok) for d, v in zip(docs, votes, strict=True)]
    assert got == [
        {"maj_acc": 0.0, "avg_acc": 3 / 8, "truncated": 0.0, "no_answer": 1 / 8},
        {"maj_acc": 1.0, "avg_acc": 3 / 8, "truncated": 0.0, "no_answer": 3 / 8},
        {"maj_acc": 0.0, "avg_acc": 2 / 8, "truncated": 0.0, "no_answer": 4 / 8},
    ]
    assert str(Vote([])) == INVALID and str(Vote([votes[0].samples[-1]])) == INVALID  # nothing committed: no vote
    assert math.isnan(task.process_results(docs[0], [votes[0]])["truncated"])  # no tokenizer in this task's metadata


def test_maj8_runs_end_to_end_with_repeated_sampling(tiny_model: Path) -> None:
    """Through lm-eval itself: every request is sent 8 times at temperature 0.6 and the samples are voted on."""
    import lm_eval

    calls: dict[str, int] = {}
    docs = list(_fixture_task("medr1_medqa_maj8").eval_docs)[:2]

    def answer(body: dict) -> Reply:
        """Doc 0: 5 of 8 samples right (maj right); doc 1: 3 of 8 right, 5 wrong (maj wrong)."""
        i = next(i for i, d in enumerate(docs) if d["question"].strip() in body["messages"][-1]["content"])
        n = calls[str(i)] = calls.get(str(i), 0) + 1
        gold = docs[i]["answer_label"]
        wrong = next(o["label"] for o in docs[i]["options"] if o["label"] != gold)
        right = n <= (5 if i == 0 else 3)
        return Reply(shape="inline", reasoning="Thinking.", content=f"The answer is {gold if right else wrong}.")

    with TeacherServer(default=answer) as server:
        res = lm_eval.simple_evaluate(
            model="local-chat-completions",
            model_args=f"model=medr1-stub,base_url={server.url}/chat/completions,tokenizer={tiny_model},max_retries=1",
            tasks=["medr1_medqa_maj8"],
            limit=2,
            apply_chat_template=True,
            gen_kwargs="max_gen_toks=64",
            task_manager=task_manager(
                include_defaults=False, metadata={"medqa_us_test": str(MEDQA_FIXTURE), "tokenizer": str(tiny_model)}
            ),
            log_samples=True,
        )
    assert calls == {"0": 8, "1": 8}
    metrics = res["results"]["medr1_medqa_maj8"]
    assert metrics["maj_acc,committed"] == 0.5
    assert metrics["avg_acc,committed"] == (5 / 8 + 3 / 8) / 2
    assert metrics["truncated,committed"] == 0.0 and metrics["no_answer,committed"] == 0.0
    assert res["configs"]["medr1_medqa_maj8"]["generation_kwargs"]["temperature"] == 0.6
