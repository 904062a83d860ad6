"""The dataset card: rendered from the build's numbers with the template in `dataset_cards/`."""

from __future__ import annotations

import re
from html import escape
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

TEMPLATE = "medr1_reasoning.md"
HISTOGRAM = "images/reasoning_length.svg"
CHANGELOG_START = "<!-- medr1:changelog -->"
CHANGELOG_END = "<!-- /medr1:changelog -->"
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


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


def template_version(name: str) -> str:
    """The version suffix of a prompt template name (`medr1-mcq-v1` -> `v1`)."""
    match = re.search(r"-(v\d+(?:\.\d+)*)$", name or "")
    return match.group(1) if match else "unversioned"


def _distribution(values: pa.ChunkedArray) -> dict[str, float] | None:
    values = values.drop_null()
    if not len(values):
        return None
    qs = pc.quantile(values, q=list(QUANTILES), interpolation="nearest").to_pylist()
    return {
        "count": len(values),
        "mean": round(pc.mean(values).as_py(), 1),
        "min": pc.min(values).as_py(),
        **{f"p{int(q * 100)}": v for q, v in zip(QUANTILES, qs, strict=True)},
        "max": pc.max(values).as_py(),
    }


def _nice_ceiling(x: float) -> int:
    """The smallest of 1, 2, 2.5, 5 × 10^k that is at least x."""
    if x <= 1:
        return 1
    k = 10 ** (len(str(int(x))) - 1)
    return int(next(m * k for m in (1, 2, 2.5, 5, 10) if m * k >= x))


def text_lengths(table: pa.Table) -> pa.Table:
    """The columns `length_stats` reads, each text column as its length in characters: a small table that a
    streamed release gathers part by part and gives to `length_stats` instead of the text."""
    names = ("reasoning", "response", "question", "completion_tokens", "source")
    lengths = {n: table.column(n) for n in names if n in table.column_names}
    for n in ("reasoning", "response", "question"):
        if n in lengths:
            lengths[n] = pc.utf8_length(lengths[n])
    return pa.table(lengths)


def length_stats(table: pa.Table, bins: int = 20, mask: pa.Array | None = None) -> dict[str, Any]:
    """Length distributions of the release rows (characters and completion tokens) and a histogram of reasoning.

    `mask` (one bool per row) picks the release rows. Lengths are computed on the text columns as they are and only
    the lengths are filtered: no text is copied. A text column may already hold lengths (`text_lengths`).
    """

    def rows(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
        return values if mask is None else values.filter(mask)

    def chars(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
        return values if pa.types.is_integer(values.type) else pc.utf8_length(values)  # lengths already counted

    stats: dict[str, Any] = {}
    columns = {
        "reasoning_chars": ("reasoning", chars),
        "response_chars": ("response", chars),
        "question_chars": ("question", chars),
        "completion_tokens": ("completion_tokens", None),
    }
    for key, (col, fn) in columns.items():
        if col in table.column_names:
            values = table.column(col)
            dist = _distribution(rows(fn(values) if fn else values))
            if dist:
                stats[key] = dist
    if "reasoning" not in table.column_names:
        return stats
    reasoning = rows(chars(table.column("reasoning")))
    if "reasoning_chars" in stats:
        lengths = reasoning.drop_null()
        top = _nice_ceiling(pc.quantile(lengths, q=0.99, interpolation="higher").to_pylist()[0] or 1)
        width = max(1, -(-top // bins))
        index = pc.min_element_wise(pc.divide(lengths, width), bins)  # the last bin holds everything >= top
        counts = pc.value_counts(index).to_pylist()
        per_bin = {c["values"]: c["counts"] for c in counts}
        stats["histogram"] = {
            "column": "reasoning",
            "unit": "characters",
            "edges": [i * width for i in range(bins + 1)],
            "counts": [per_bin.get(i, 0) for i in range(bins + 1)],
        }
    if "source" in table.column_names:
        sources = rows(table.column("source"))
        by_source = {}
        for source in sorted(pc.unique(sources).to_pylist()):
            mine = pc.equal(sources, source)
            dist = _distribution(reasoning.filter(mine))
            by_source[source] = {
                "rows": pc.sum(mine).as_py() or 0,
                "reasoning_chars_p50": dist["p50"] if dist else None,
            }
        stats["by_source"] = by_source
    return stats


def histogram_svg(hist: dict[str, Any], title: str = "Reasoning length") -> str:
    """A small, dependency-free SVG bar chart of a histogram from `length_stats`."""
    counts, edges = hist["counts"], hist["edges"]
    w, h, left, bottom, top = 640, 300, 56, 40, 28
    plot_w, plot_h = w - left - 16, h - bottom - top
    peak = max(counts) or 1
    bar = plot_w / len(counts)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="18" text-anchor="middle" font-size="13">{escape(title)} ({hist["unit"]}, '
        f"{sum(counts):,} traces)</text>",
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="black"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{peak:,}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    for i, n in enumerate(counts):
        bh = plot_h * n / peak
        x = left + i * bar
        label = f"≥ {edges[-1]:,}" if i == len(counts) - 1 else f"{edges[i]:,}–{edges[i + 1]:,}"
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{top + plot_h - bh:.1f}" width="{bar - 2:.1f}" height="{bh:.1f}" '
            f'fill="#4a7fb0"><title>{label}: {n:,}</title></rect>'
        )
    for i in range(0, len(edges), 5):
        x = left + i * bar
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle">{edges[i]:,}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{h - 6}" text-anchor="middle">{hist["unit"]}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def card_data(schema: pa.Schema, configs: dict[str, dict[str, Any]], meta: dict[str, Any]) -> Any:
    """The YAML header: licence, task, size, `configs` with data_files, and per config `dataset_info`."""
    import datasets
    from huggingface_hub import DatasetCardData

    total = sum(s["rows"] for s in configs["default"]["splits"].values())
    yaml_configs = []
    infos = {}
    for name, config in configs.items():
        if name == "default":
            files = [{"split": split, "path": f"data/{split}-*"} for split in config["splits"]]
        else:
            files = [
                {"split": split, "path": [p for p in config["files"] if Path(p).name.startswith(f"{split}-")]}
                for split in config["splits"]
            ]
        yaml_configs.append({"config_name": name, "data_files": files})
        splits = datasets.SplitDict()
        for split, s in config["splits"].items():
            splits.add(datasets.SplitInfo(split, num_bytes=s["arrow_bytes"], num_examples=s["rows"]))
        infos[name] = datasets.DatasetInfo(
            features=datasets.Features.from_arrow_schema(schema),
            splits=splits,
            download_size=sum(s["bytes"] for s in config["splits"].values()),
            dataset_size=sum(s["arrow_bytes"] for s in config["splits"].values()),
        )
    data = DatasetCardData(
        license=meta["license"],
        language=["en"],
        pretty_name=meta["pretty_name"],
        task_categories=["question-answering", "text-generation"],
        size_categories=[size_category(total)],
        tags=["medical", "reasoning", "distillation", "chain-of-thought"],
        configs=yaml_configs,
    )
    datasets.info.DatasetInfosDict(infos).to_dataset_card_data(data)
    return data


def render_card(out: Path, schema: pa.Schema, stats: dict[str, Any]) -> Path:
    """Write `README.md` (and the length histogram, when there are traces) in `out` from the build's numbers."""
    from huggingface_hub import DatasetCard

    out = Path(out)
    data = card_data(schema, stats["configs"], stats)
    hist = stats.get("lengths", {}).get("histogram")
    image = out / HISTOGRAM
    if hist:
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_text(histogram_svg(hist), encoding="utf-8")
    elif image.exists():
        image.unlink()
    card = DatasetCard.from_template(
        data,
        template_path=str(template_dir() / TEMPLATE),
        histogram=HISTOGRAM if hist else None,
        changelog_start=CHANGELOG_START,
        changelog_end=CHANGELOG_END,
        **stats,
    )
    path = out / "README.md"
    text = re.sub(r"\n{3,}", "\n\n", str(card))  # blank lines left by the template's skipped sections
    path.write_text(text.rstrip() + "\n", encoding="utf-8")
    return path


def changelog_lines(card_text: str) -> list[str]:
    """The bullet lines between the card's changelog markers (without the leading `- `)."""
    start, end = card_text.find(CHANGELOG_START), card_text.find(CHANGELOG_END)
    if start < 0 or end < start:
        return []
    body = card_text[start + len(CHANGELOG_START) : end]
    return [line[2:].strip() for line in body.splitlines() if line.startswith("- ")]


def replace_changelog(card_text: str, lines: list[str]) -> str:
    """The card with its changelog section replaced by `lines`."""
    start, end = card_text.find(CHANGELOG_START), card_text.find(CHANGELOG_END)
    if start < 0 or end < start:
        raise ValueError("the card has no changelog markers")
    body = "\n" + "".join(f"- {line}\n" for line in lines)
    return card_text[: start + len(CHANGELOG_START)] + body + card_text[end:]
