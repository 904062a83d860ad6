"""Quality flags on the 851 real R1 completions with </think> and on corrupted copies of them, side by side.

Usage: python benchmarks/corruptions.py [--data ../shared/data] [--seed 7]
Each corruption kind (tests/corrupt.py) must raise its flag on >= 95% of the copies and on <= 5% of the originals.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medr1_data.verify import verify
from tests.corrupt import CORRUPTIONS, corrupt_verified, flagged
from tests.real_traces import load_real_traces


def main() -> None:
    """Print one row per corruption kind."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    real = load_real_traces(args.data / "traces")
    clean = verify(real.filter(pa.compute.field("has_think_end")))
    print(f"{'corruption (flag)':22} {'copies flagged':>15} {'originals flagged':>18}")
    for kind in CORRUPTIONS:
        copies = corrupt_verified(clean, kind, seed=args.seed)
        print(f"{kind:22} {flagged(copies, kind):>15.1%} {flagged(clean, kind):>18.1%}")


if __name__ == "__main__":
    main()
