"""The answer extractor on the 862 real DeepSeek-R1 completions: answer rate and agreement per file.

Usage: python benchmarks/answers.py [--data ../shared/data] [--show-disagreements]
Agreement is with each file's own `predicted_answer` (the medagents-benchmark parser), side by side.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medr1_data.verify import verify
from tests.real_traces import load_real_traces


def main() -> None:
    """Print one row per trace file and, optionally, every disagreement with the file's own parser."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    p.add_argument("--show-disagreements", action="store_true")
    args = p.parse_args()
    df = pl.from_arrow(verify(load_real_traces(args.data / "traces", "*.json")))
    df = df.with_columns(pl.col("meta").str.json_path_match("$.file").alias("file"))
    table = (
        df.group_by("file")
        .agg(
            pl.len().alias("rows"),
            pl.col("has_think_end").sum().alias("with_</think>"),
            pl.col("pred_label").filter(pl.col("has_think_end")).is_not_null().mean().alias("answer_rate"),
            (pl.col("pred_label") == pl.col("predicted_answer"))
            .filter(pl.col("has_think_end"))
            .mean()
            .alias("agree_with_file"),
            (pl.col("pred_label") == pl.col("answer_label")).mean().alias("medr1_accuracy"),
            (pl.col("predicted_answer") == pl.col("answer_label")).mean().alias("file_accuracy"),
        )
        .sort("file")
    )
    with pl.Config(tbl_rows=20, tbl_width_chars=160, tbl_hide_dataframe_shape=True, float_precision=3):
        print(table)
        done = df.filter(pl.col("has_think_end"))
        print(
            f"all files: answer on {done['pred_label'].is_not_null().mean():.3%} of {done.height} completions "
            f"with </think>; agreement {(done['pred_label'] == done['predicted_answer']).mean():.3%}"
        )
    if args.show_disagreements:
        dis = done.filter(pl.col("pred_label").ne_missing(pl.col("predicted_answer")))
        for row in dis.iter_rows(named=True):
            print(
                f"\n--- {row['file']} #{row['source_id']}: medr1={row['pred_label']} file={row['predicted_answer']} "
                f"gold={row['answer_label']}\nresponse: {row['response'][-300:]!r}"
            )


if __name__ == "__main__":
    main()
