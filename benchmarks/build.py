"""The whole build at scale, offline: N generated questions and N recorded teacher responses -> release + card.

Usage: python benchmarks/build.py --rows 170000 [--rows 500000 ...] [--json OUT.json] [--keep DIR] [--seed 0]
       [--no-second-build] [--max-rss-gb 8] [--against REV]

Generates N questions in the sources' native formats (MedQA JSON lines, MedMCQA JSON lines, PubMedQA
`ori_pqal.json` + `test_ground_truth.json`, about 6 / 90 / 4 %, 1 % near-duplicates), a small benchmark test file
(some items copied from the questions, so decontamination has work to do) and one teacher response per question in
the response-cache format (about 5K characters of reasoning; about 15 % wrong answers, 2 % truncated), writes a
recipe pointing at them, then runs `medr1-data build --recipe THAT --quiet` in a fresh process. It prints each
stage's seconds and peak RSS from `build_report.json`, the build's wall time and peak RSS (the child's
`ru_maxrss`), and, as a baseline measured in the same run, the bare I/O floor: polars streaming the response cache
into one zstd Parquet file, which any build has to do. Then it runs the build again on the same
folder: every stage is served from its checkpoint (the resume path), and the two builds' shard checksums must
match. With several --rows it does all of this for each size and ends with one table of them side by side.
With --against REV it also builds the same inputs with the library as of git revision REV, right after this
checkout's build, in the same run: the ratio of the two is what a change did, whatever the machine's speed today.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORDS = [
    "patient",
    "presents",
    "with",
    "acute",
    "chronic",
    "pain",
    "fever",
    "cough",
    "dyspnea",
    "chest",
    "abdominal",
    "headache",
    "nausea",
    "vomiting",
    "diarrhea",
    "fatigue",
    "weight",
    "loss",
    "rash",
    "swelling",
    "bleeding",
    "history",
    "of",
    "hypertension",
    "diabetes",
    "smoking",
    "alcohol",
    "examination",
    "reveals",
    "tenderness",
    "murmur",
    "crackles",
    "edema",
    "jaundice",
    "pallor",
    "cyanosis",
    "tachycardia",
    "bradycardia",
    "laboratory",
    "shows",
    "elevated",
    "decreased",
    "serum",
    "sodium",
    "potassium",
    "calcium",
    "glucose",
    "creatinine",
    "hemoglobin",
    "platelet",
    "leukocyte",
    "count",
    "biopsy",
    "culture",
    "imaging",
    "radiograph",
    "ultrasound",
    "computed",
    "tomography",
    "magnetic",
    "resonance",
    "electrocardiogram",
    "infection",
    "inflammation",
    "neoplasm",
    "deficiency",
    "syndrome",
    "disorder",
    "lesion",
    "mass",
    "nodule",
    "ulcer",
    "artery",
    "vein",
    "nerve",
    "muscle",
    "bone",
    "kidney",
    "liver",
    "lung",
    "heart",
    "brain",
    "spleen",
    "pancreas",
    "thyroid",
    "adrenal",
    "pituitary",
    "enzyme",
    "receptor",
    "hormone",
    "antibody",
    "antigen",
    "toxin",
    "drug",
    "dose",
    "therapy",
    "treatment",
    "management",
    "diagnosis",
    "mechanism",
    "pathophysiology",
    "complication",
    "prognosis",
    "risk",
    "factor",
    "year",
    "old",
    "man",
    "woman",
    "child",
    "infant",
]
DRUGS = [
    "aspirin",
    "heparin",
    "warfarin",
    "metformin",
    "insulin",
    "lisinopril",
    "metoprolol",
    "amiodarone",
    "digoxin",
    "furosemide",
    "spironolactone",
    "prednisone",
    "methotrexate",
    "cyclophosphamide",
    "vancomycin",
    "ceftriaxone",
    "doxycycline",
    "azithromycin",
    "isoniazid",
    "rifampin",
    "fluconazole",
    "acyclovir",
    "levothyroxine",
    "propylthiouracil",
    "lithium",
    "haloperidol",
    "sertraline",
    "phenytoin",
    "carbamazepine",
    "ethosuximide",
    "valproate",
    "morphine",
    "naloxone",
    "atropine",
    "epinephrine",
    "dopamine",
]
REASONING_OPENERS = ("Okay, let's see.", "Alright, so", "Hmm, the question asks", "Let me think about this.")


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    words = rng.choices(WORDS + DRUGS, k=rng.randint(lo, hi))
    return " ".join(words).capitalize() + "."


def _stem(rng: random.Random, i: int) -> str:
    # The index in words keeps every stem distinct; the rest is vocabulary soup of clinical-vignette length.
    return f"Case {i}: " + " ".join(_sentence(rng, 8, 16) for _ in range(rng.randint(3, 6))) + " What is the cause?"


def _options(rng: random.Random, k: int) -> list[str]:
    return [" ".join(rng.choices(DRUGS + WORDS, k=rng.randint(1, 4))).capitalize() for _ in range(k)]


def generate(folder: Path, n: int, seed: int = 0) -> tuple[Path, list[tuple[str, str, list[str]]]]:
    """Write the sources, the benchmark file and the recipe for `n` questions; return (recipe path, questions)."""
    rng = random.Random(seed)
    n_medqa, n_pubmed = max(1, n * 6 // 100), max(1, n * 4 // 100)
    n_medmcqa = n - n_medqa - n_pubmed
    questions: list[tuple[str, str, list[str]]] = []  # (source, stem, options) to copy into the benchmark
    made: list[tuple[str, list[str]]] = []

    def item(i: int) -> tuple[str, list[str]]:
        if made and rng.random() < 0.01:  # a near-duplicate of an earlier question: one word changed
            s, opts = made[rng.randrange(len(made))]
            words = s.split()
            words[-5] = rng.choice(WORDS)
            s = " ".join(words)
        else:
            s, opts = _stem(rng, i), _options(rng, 4)
        made.append((s, opts))
        return s, opts

    (folder / "pubmedqa").mkdir(parents=True, exist_ok=True)
    with (folder / "medqa_train.jsonl").open("w", encoding="utf-8") as f:
        for i in range(n_medqa):
            q, opts = item(i)
            label = "ABCD"[rng.randrange(4)]
            mapping = dict(zip("ABCD", opts, strict=True))
            row = {
                "question": q,
                "answer": mapping[label],
                "options": mapping,
                "meta_info": "step1",
                "answer_idx": label,
            }
            f.write(json.dumps(row) + "\n")
            questions.append(("medqa", q, opts))
    with (folder / "medmcqa_train.jsonl").open("w", encoding="utf-8") as f:
        for i in range(n_medqa, n_medqa + n_medmcqa):
            q, opts = item(i)
            row = {
                "question": q,
                "exp": _sentence(rng, 10, 30),
                "cop": rng.randrange(4) + 1,  # MedMCQA counts options from 1
                "opa": opts[0],
                "opb": opts[1],
                "opc": opts[2],
                "opd": opts[3],
                "subject_name": "Medicine",
                "topic_name": None,
                "id": f"bench-{i:08d}",
                "choice_type": "single",
            }
            f.write(json.dumps(row) + "\n")
            questions.append(("medmcqa", q, opts))
    pqal = {}
    for i in range(n_pubmed):
        q = _stem(rng, n_medqa + n_medmcqa + i).replace("What is the cause?", "Does it matter?")
        pqal[str(50_000_000 + i)] = {
            "QUESTION": q,
            "CONTEXTS": [" ".join(_sentence(rng, 10, 25) for _ in range(4)) for _ in range(3)],
            "LABELS": ["BACKGROUND", "METHODS", "RESULTS"],
            "MESHES": ["Humans"],
            "YEAR": "2010",
            "reasoning_required_pred": "yes",
            "reasoning_free_pred": "yes",
            "final_decision": rng.choice(["yes", "no", "maybe"]),
            "LONG_ANSWER": _sentence(rng, 10, 25),
        }
        questions.append(("pubmedqa", q, ["yes", "no", "maybe"]))
    (folder / "pubmedqa" / "ori_pqal.json").write_text(json.dumps(pqal), encoding="utf-8")
    (folder / "pubmedqa" / "test_ground_truth.json").write_text("{}", encoding="utf-8")

    with (folder / "bench_test.jsonl").open("w", encoding="utf-8") as f:
        for j in range(40):  # 20 copies of training questions (contamination), 20 unrelated items
            if j % 2 == 0:
                src, q, opts = questions[(j * 7919) % len(questions)]
                if src == "pubmedqa":
                    src, q, opts = questions[0]
            else:
                q, opts = _stem(rng, -j), _options(rng, 4)
            row = {"id": f"bench-test-{j}", "question": q, "options": dict(zip("ABCD", opts, strict=False))}
            f.write(json.dumps({**row, "answer_idx": "A"}) + "\n")

    recipe = (ROOT / "medr1_data" / "recipes" / "demo.yaml").read_text(encoding="utf-8")
    import yaml

    raw = yaml.safe_load(recipe)
    raw.update(
        name="medr1-benchmark",
        description=f"benchmarks/build.py: {n} generated questions",
        sources=[
            {"spec": f"medqa={folder / 'medqa_train.jsonl'}", "split": "train"},
            {"spec": f"medmcqa={folder / 'medmcqa_train.jsonl'}", "split": "train"},
            {"spec": f"pubmedqa={folder / 'pubmedqa'}", "split": "train"},
        ],
        decontam={"benchmarks": [f"mcq:bench_test={folder / 'bench_test.jsonl'}"]},
    )
    raw["teacher"].update(samples=1, cache=str(folder / "cache"), model="benchmark/generated")
    # DeepSeek's R1 list prices, so that the teacher stage's cost line has realistic numbers
    raw["teacher"].update(price_input_cache_hit_per_m=0.14, price_input_per_m=0.55, price_output_per_m=2.19)
    raw["card"]["demo_notice"] = "Generated benchmark data, not real questions or teacher output."
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path, questions


def write_cache(recipe_path: Path, seed: int = 0) -> int:
    """One recorded response per question, keyed as the distill stage looks them up; returns the count."""
    import orjson

    from medr1_data.recipe import load_recipe
    from medr1_data.stages import recipe_questions
    from medr1_data.teacher import ResponseCache, cache_record, plan_requests

    rng = random.Random(seed + 1)
    recipe = load_recipe(str(recipe_path))
    questions = recipe_questions(recipe)
    labels = questions.column("answer_label").to_pylist()
    options = questions.column("options").combine_chunks()
    option_labels = options.flatten().field("label").to_pylist()  # flat: no dict per option (2.2M rows fit)
    offsets = options.offsets.to_pylist()
    pool = [_sentence(rng, 10, 22) for _ in range(20_000)]
    cache = ResponseCache(recipe.resolve(recipe.teacher.cache))
    cache.folder.mkdir(parents=True, exist_ok=True)
    n = 0
    with cache.path.open("wb") as f:
        for i, s, key in plan_requests(questions, recipe.teacher).requests:
            letters = option_labels[offsets[i] : offsets[i + 1]]
            gold = labels[i]
            r = rng.random()
            answer = gold if r >= 0.15 else rng.choice(letters)
            paragraphs = []
            body = rng.sample(pool, rng.randint(28, 44))  # ~5K characters
            for p in range(0, len(body), 4):
                paragraphs.append(" ".join(body[p : p + 4]))
            paragraphs.insert(0, f"{rng.choice(REASONING_OPENERS)} The question is about option {gold} or another.")
            paragraphs.append(f"So the answer is {answer}.")
            reasoning = "\n\n".join(paragraphs)
            finish = "length" if rng.random() < 0.02 else "stop"
            content = "" if finish == "length" else f"{pool[i % len(pool)]} The answer is ({answer})."
            usage = {"prompt_tokens": 180 + i % 50, "completion_tokens": len(reasoning) // 4 + 20}
            message = {"role": "assistant", "content": content, "reasoning_content": reasoning}
            rec = cache_record(key, recipe.teacher, s, message, finish, usage, 12.5)
            f.write(orjson.dumps(rec, option=orjson.OPT_SORT_KEYS) + b"\n")
            n += 1
    return n


def generate_all(work: Path, rows: int, seed: int) -> int:
    """The sources, benchmark file, recipe and response cache of `rows` questions; returns the responses written."""
    recipe_path, _ = generate(work, rows, seed)
    return write_cache(recipe_path, seed)


def run_build(
    recipe_path: Path, out: Path, until: str | None = None, max_rss_mb: float = math.inf, cwd: Path = ROOT
) -> tuple[float, float, dict]:
    """Run `medr1-data build` in a child process: (seconds, peak RSS MB sampled from outside, build_report.json).

    The child's own per-stage peaks (the kernel's high-water mark, reset at each stage, plus its workers' peaks) are
    in the report; the parent samples the VmRSS of the child and its workers every 50 ms as an independent check (it
    can miss a peak shorter than that).
    `cwd` holds the `medr1_data` that runs (this checkout's, or a baseline revision's).
    """
    cmd = [sys.executable, "-m", "medr1_data.cli", "build", "--recipe", str(recipe_path), "--out", str(out), "--quiet"]
    cmd += ["--until", until] if until else []
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
    sampled = 0
    while proc.poll() is None:
        sampled = max(sampled, tree_rss_kb(proc.pid))
        if sampled / 1024 > max_rss_mb:  # a shared machine: stop before the OOM killer picks someone else
            proc.kill()
            sys.exit(f"build stopped: RSS {sampled / 1024:,.0f} MB passed --max-rss-gb (stages done: {done(out)})")
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    _, err = proc.communicate()
    if proc.returncode:
        sys.exit(f"build failed ({proc.returncode}): {err.strip()}")
    report = json.loads((out.with_name(out.name + ".build") / "build_report.json").read_text())
    return seconds, sampled / 1024, report


def tree_rss_kb(pid: int) -> int:
    """VmRSS of a process and all its descendants (the build's worker processes), in kB; 0 once it has gone."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total = int(line.split()[1])
        children = [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    except OSError:
        return total
    return total + sum(tree_rss_kb(c) for c in children)


def done(out: Path) -> str:
    """The stages with a checkpoint in `out`'s build folder."""
    folder = out.with_name(out.name + ".build") / "checkpoints"
    return ", ".join(p.stem.split("-", 1)[1] for p in sorted(folder.glob("*.json"))) or "none"


def floor(recipe_path: Path, tmp: Path) -> float:
    """The I/O floor: polars streams the response cache into one zstd Parquet file (bounded memory, like the build)."""
    import polars as pl

    start = time.perf_counter()
    pl.scan_ndjson(recipe_path.parent / "cache" / "responses.jsonl").sink_parquet(tmp / "floor.parquet")
    seconds = time.perf_counter() - start
    (tmp / "floor.parquet").unlink()
    return seconds


def measure(rows: int, args: argparse.Namespace, work: Path) -> dict:
    """Generate `rows` questions and responses in `work`, build, rebuild from checkpoints; print one size's tables."""
    t0 = time.perf_counter()
    recipe_path = work / "recipe.yaml"
    cache = work / "cache" / "responses.jsonl"
    if (work / "generated").is_file():  # a --keep folder generated before: reuse its inputs, remove its builds
        n_cache = int((work / "generated").read_text())
        for old in ("release", "release.build", "fresh", "fresh.build"):
            shutil.rmtree(work / old, ignore_errors=True)
    else:  # in a child process, so that the memory it took is not held while the builds run
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            n_cache = pool.submit(generate_all, work, rows, args.seed).result()
        (work / "generated").write_text(str(n_cache))
    cache_mb = cache.stat().st_size / 1e6
    print(
        f"\n## {rows:,} rows: generated {n_cache:,} responses ({cache_mb:,.0f} MB cache) in "
        f"{time.perf_counter() - t0:.0f}s",
        flush=True,
    )
    load = os.getloadavg()[0]
    out = work / "release"
    limit = args.max_rss_gb * 1024
    seconds, sampled_mb, report = run_build(recipe_path, out, args.until, limit)
    base_s = baseline_build(recipe_path, work, args.against, args.until, limit) if args.against else math.nan
    complete = report["complete"]
    first_manifest = (out / "manifest.json").read_bytes() if complete else b'{"files": []}'
    floor_s = floor(recipe_path, work)
    again_s, _, again = run_build(recipe_path, out, args.until, limit)
    same = not complete or (out / "manifest.json").read_bytes() == first_manifest
    fresh_s, same_fresh = math.nan, None
    if complete and not args.no_second_build:  # a second build from scratch, in another folder
        fresh_s, _, _ = run_build(recipe_path, work / "fresh", args.until, limit)
        fresh = json.loads((work / "fresh" / "manifest.json").read_text())["files"]
        same_fresh = [f["sha256"] for f in fresh] == [f["sha256"] for f in json.loads(first_manifest)["files"]]
    manifest = json.loads(first_manifest)
    load_after = os.getloadavg()[0]

    peak_mb = report["peak_rss_mb"]
    print(f"load average (1 min) before / after the builds: {load:.2f} / {load_after:.2f} on {os.cpu_count()} CPUs\n")
    print(f"{'stage':10} {'rows in':>9} {'rows out':>9} {'seconds':>8} {'peak RSS MB':>12} {'rebuild':>8}")
    rerun = {s["stage"]: s for s in again["stages"]}
    for s in report["stages"]:
        rows_in = "" if s["rows_in"] is None else s["rows_in"]
        print(
            f"{s['stage']:10} {rows_in:>9} {s['rows_out']:>9} {s['seconds']:>8.2f} "
            f"{s['peak_rss_mb']:>12,.0f} {'cached' if rerun[s['stage']]['cached'] else 'RAN':>8}"
        )
    kept = sum(f["rows"] for f in manifest["files"])
    print(f"{'build':10} {'':>9} {kept:>9} {seconds:>8.2f} {peak_mb:>12,.0f} {again_s:>8.2f}")
    print(
        f"(seconds: the stage, reading its input and writing its checkpoint included; build: the child process's"
        f" wall time, imports included; RSS sampled from outside every 50 ms: {sampled_mb:,.0f} MB)\n"
    )
    print(f"{'what':44} {'seconds':>8} {'vs floor':>9}")
    print(f"{'floor: polars streams cache to zstd parquet':44} {floor_s:>8.2f} {1.0:>8.2f}x")
    what = "full build (9 stages, checkpoints)" if complete else f"build until {args.until} (checkpoints)"
    print(f"{what:44} {seconds:>8.2f} {seconds / floor_s:>8.2f}x")
    print(f"{'rebuild: every stage from its checkpoint':44} {again_s:>8.2f} {again_s / floor_s:>8.2f}x")
    if not math.isnan(fresh_s):
        print(f"{'second full build, fresh folder':44} {fresh_s:>8.2f} {fresh_s / floor_s:>8.2f}x")
    if not math.isnan(base_s):
        print(f"{f'baseline: the library at {args.against}':44} {base_s:>8.2f} {base_s / floor_s:>8.2f}x")
        print(f"this checkout / baseline: {seconds / base_s:.2f}x the time")
    print(f"manifest unchanged by the rebuild: {same}; fresh build's shards byte-identical: {same_fresh}", flush=True)
    return {
        "rows": rows,
        "kept": kept,
        "complete": complete,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak_mb, 1),
        "sampled_peak_rss_mb": round(sampled_mb, 1),
        "load_average": [round(load, 2), round(load_after, 2)],
        "second_build_seconds": None if math.isnan(fresh_s) else round(fresh_s, 2),
        "rebuild_manifest_unchanged": same,
        "second_build_byte_identical": same_fresh,
        "floor_seconds": round(floor_s, 2),
        "rebuild_seconds": round(again_s, 2),
        "baseline": args.against,
        "baseline_seconds": None if math.isnan(base_s) else round(base_s, 2),
        "stages": {
            s["stage"]: {k: s.get(k) for k in ("rows_in", "rows_out", "seconds", "peak_rss_mb")}
            for s in report["stages"]
        },
    }


def baseline_build(recipe_path: Path, work: Path, rev: str, until: str | None, max_rss_mb: float) -> float:
    """Seconds of a build of the same inputs by the library at `rev` (its own folders, removed after)."""
    from revision import old_tree

    tree = old_tree(rev, work / "baseline-src")
    if tree is None:
        sys.exit(f"--against {rev}: git cannot export that revision")
    try:
        return run_build(recipe_path, work / "baseline", until, max_rss_mb, cwd=tree)[0]
    finally:
        for name in ("baseline-src", "baseline", "baseline.build"):
            shutil.rmtree(work / name, ignore_errors=True)


def summary(results: list[dict]) -> None:
    """One line per size: time, time per 100K rows, peak RSS and the I/O floor (and baseline) of the same run."""
    head = f"{'rows':>10} {'kept':>10} {'build s':>8} {'s/100K':>7} {'peak RSS GB':>12} {'floor s':>8} {'vs floor':>9}"
    base = results[0]["baseline"] if results and results[0]["baseline_seconds"] else None
    print("\n" + head + (f" {'baseline s':>10} {'vs baseline':>11}" if base else ""))
    for r in results:
        line = (
            f"{r['rows']:>10,} {r['kept']:>10,} {r['seconds']:>8.1f} {r['seconds'] / r['rows'] * 1e5:>7.1f} "
            f"{r['peak_rss_mb'] / 1024:>12.2f} {r['floor_seconds']:>8.1f} {r['seconds'] / r['floor_seconds']:>8.1f}x"
        )
        if base:
            line += f" {r['baseline_seconds']:>10.1f} {r['seconds'] / r['baseline_seconds']:>10.2f}x"
        print(line)
    if base:
        print(f"(baseline: the library at git revision {base}, building the same inputs in the same run)")


def main() -> None:
    """Generate, build, rebuild from checkpoints for each --rows; print the tables; optionally write --json."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, action="append", help="questions to generate (repeat for several sizes)")
    p.add_argument("--json", type=Path, help="write [{rows, seconds, peak_rss_mb, stages, ...}] here")
    p.add_argument("--keep", type=Path, help="generate into DIR/ROWS-seedS and keep it; a rerun reuses it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-second-build", action="store_true", help="skip the second full build (byte-identity check)")
    p.add_argument("--until", metavar="STAGE", help="stop the builds after this stage")
    p.add_argument("--max-rss-gb", type=float, default=math.inf, help="kill the build when its RSS passes this")
    p.add_argument("--against", metavar="REV", help="also build with the library at this git revision (baseline)")
    args = p.parse_args()
    sizes = args.rows or [170_000]
    results = []
    for rows in sizes:
        with tempfile.TemporaryDirectory() as tmp_name:
            work = args.keep / f"{rows}-seed{args.seed}" if args.keep else Path(tmp_name)
            work.mkdir(parents=True, exist_ok=True)
            results.append(measure(rows, args, work))
    summary(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
