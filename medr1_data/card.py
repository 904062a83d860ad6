"""The dataset card: rendered from the build's numbers with the template in `dataset_cards/`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

TEMPLATE = "medr1_reasoning.md"


def template_dir() -> Path:
    """`dataset_cards/` of a source checkout, or its copy inside the installed package."""
    here = Path(__file__).resolve().parent
    for folder in (here / "dataset_cards", here.parent / "dataset_cards"):
        if (folder / TEMPLATE).exists():
            return folder
    raise FileNotFoundError(f"{TEMPLATE} not found beside {here}")


def size_category(n: int) -> str:
    """The Hub's `size_categories` bucket for n rows."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def card_data(
    schema: pa.Schema, rows: int, num_bytes: int, download_size: int, split: str, meta: dict[str, Any]
) -> Any:
    """The YAML header: licence, task, size, configs with data_files, and `dataset_info` with features and splits."""
    import datasets
    from huggingface_hub import DatasetCardData

    data = DatasetCardData(
        license=meta["license"],
        language=["en"],
        pretty_name=meta["pretty_name"],
        task_categories=["question-answering", "text-generation"],
        size_categories=[size_category(rows)],
        tags=["medical", "reasoning", "distillation", "chain-of-thought"],
        configs=[{"config_name": "default", "data_files": [{"split": split, "path": f"data/{split}-*"}]}],
    )
    info = datasets.DatasetInfo(
        features=datasets.Features.from_arrow_schema(schema),
        splits=datasets.SplitDict({split: datasets.SplitInfo(split, num_bytes=num_bytes, num_examples=rows)}),
        download_size=download_size,
        dataset_size=num_bytes,
    )
    datasets.info.DatasetInfosDict({"default": info}).to_dataset_card_data(data)
    return data


def render_card(out: Path, schema: pa.Schema, stats: dict[str, Any]) -> Path:
    """Write `README.md` in `out` from the build's numbers (`stats`) and return its path."""
    from huggingface_hub import DatasetCard

    data = card_data(schema, stats["rows"], stats["arrow_bytes"], stats["bytes"], stats["split"], stats)
    card = DatasetCard.from_template(data, template_path=str(template_dir() / TEMPLATE), **stats)
    path = Path(out) / "README.md"
    path.write_text(str(card).rstrip() + "\n", encoding="utf-8")
    return path
