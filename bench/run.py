"""Run every benchmark and print one table; also write bench/results.md for the README.

Each module in BENCHES has `run(quick: bool) -> list[Figure]`. Figures are measurements, not
pass/fail: these machines are noisy, so nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

BENCHES: list[str] = [
    # each feature appends its module here
    "bench.bench_costs",
    "bench.bench_invoicing",
    "bench.bench_reconcile",
    "bench.bench_invoices",
    "bench.bench_usage",
    "bench.bench_collections",
    "bench.bench_cockpit",
    "bench.bench_browser",
]
RESULTS = Path(__file__).resolve().parent / "results.md"


@dataclass
class Figure:
    area: str
    figure: str
    value: str
    goal: str = ""
    dataset: str = ""


def _table(rows: list[Figure]) -> str:
    head = "| area | figure | value | goal | dataset |\n| --- | --- | --- | --- | --- |\n"
    return head + "".join(
        f"| {r.area} | {r.figure} | {r.value} | {r.goal} | {r.dataset} |\n" for r in rows
    )


def previous_values(text: str) -> dict[tuple[str, str], str]:
    """(area, figure) -> value from an earlier results.md, to print beside this run's figures."""
    found: dict[tuple[str, str], str] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0] not in ("area", "---"):
            found[(cells[0], cells[1])] = cells[2]
    return found


def _comparison(rows: list[Figure], before: dict[tuple[str, str], str]) -> str:
    """This run beside the last full run's results.md (a change of code shows in both columns)."""
    head = "| area | figure | this run | results.md before |\n| --- | --- | --- | --- |\n"
    return head + "".join(
        f"| {r.area} | {r.figure} | {r.value} | {before.get((r.area, r.figure), '(new)')} |\n"
        for r in rows
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small datasets (smoke run)")
    parser.add_argument("--only", help="run only modules whose name contains this")
    args = parser.parse_args(argv)
    rows: list[Figure] = []
    failed = 0
    for name in BENCHES:
        if args.only and args.only not in name:
            continue
        started = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            rows.extend(importlib.import_module(name).run(args.quick))
        except Exception:
            failed += 1
            traceback.print_exc()
            rows.append(Figure(name, "FAILED", "see log"))
        print(f"  done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    table = _table(rows)
    print(table)
    if RESULTS.exists():
        print("Compared with the last full run (bench/results.md as it was before this run):\n")
        print(_comparison(rows, previous_values(RESULTS.read_text())))
    if not args.quick and not args.only:
        RESULTS.write_text("# Benchmark results\n\nWritten by `make bench`.\n\n" + table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
