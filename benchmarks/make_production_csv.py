#!/usr/bin/env python3
"""Make a production-scale strategy CSV from the real 82 x 2,500 extract.

Production files are 82 rows (trading days) x 25,544 strategy columns plus Date and Day.
Only smaller real extracts ship in ../data, so this grows one to any width: each new column
is a real column chosen at random, scaled by a factor in [0.8, 1.2] and perturbed by gaussian
noise of 5% of that column's standard deviation. The result keeps the real distribution of
P&L, drawdowns and correlations, and is deterministic for a given --seed.

Usage:
    make_production_csv.py OUT.csv [--strategies 25544] [--seed 7] [--source PATH]

Needs numpy only. Writes about 40 MB for the default width (full float precision,
like production exports).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parent / "samples" / "sensex_82x2500.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--strategies", type=int, default=25_544)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    args = parser.parse_args(argv)

    with args.source.open(newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    dates = [r[0] for r in body]
    days = [r[1] for r in body]
    names = header[2:]
    values = np.array([[float(x) for x in r[2:]] for r in body])  # days x strategies

    rng = np.random.default_rng(args.seed)
    picks = rng.integers(0, values.shape[1], size=args.strategies)
    scale = rng.uniform(0.8, 1.2, size=args.strategies)
    base = values[:, picks] * scale
    noise = rng.standard_normal(base.shape) * (0.05 * values[:, picks].std(axis=0))
    out = base + noise
    out_names = [f"{names[p]} #{i:05d}" for i, p in enumerate(picks)]

    with args.out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Date", "Day", *out_names])
        for i in range(out.shape[0]):
            writer.writerow([dates[i], days[i], *out[i].tolist()])
    print(f"wrote {args.out}: {out.shape[0]} rows x {args.strategies} strategies", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
