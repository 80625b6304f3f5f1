"""Holds the test suite to its time budget: each test file's seconds against bench/ci_budgets.json.

CI (.ci/run) runs pytest with --junitxml and then this script on that file. It fails (exit 1) when a test file took
more than 1.5x its recorded budget, or when a file with no budget took more than NEW_FILE_S, and prints one line per
file, slowest first, with the ratio to its budget. Small files are judged against a floor of FLOOR_S, so that a 2 s
file taking 4 s on a busy machine is not a failure.

Budgets are seconds on the CI machine (2 cores, no GPU), alone on its cores, as .ci/run runs the suite: two
pytest-xdist workers, each pinned to one core (tests/conftest.py). After a deliberate change of cost, record new ones
from a clean run:

    .venv/bin/python -m pytest -n 2 --junitxml=/tmp/junit.xml
    .venv/bin/python bench/ci_budget.py /tmp/junit.xml --record

A file's time is the sum of its tests' times, each with its fixtures' setup: a session fixture is paid by the first
test on each worker that asks for it, so moving tests between files, or files between workers, moves that cost too.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

BUDGETS = Path(__file__).with_name("ci_budgets.json")
GROWTH = 1.5
"""A file fails when it took more than 1.5x its budget (the issue's "grows past its budget by more than 50 %")."""
FLOOR_S = 20.0
"""Budgets below 20 s are judged as 20 s: at that size, load on the machine alone can double a file's time."""
NEW_FILE_S = 30.0
"""A test file with no recorded budget may take up to 30 s; a slower one must be given a budget on purpose."""


def file_seconds(junit: Path) -> dict[str, float]:
    """Seconds per test file (tests/test_x.py) from a pytest --junitxml file."""
    totals: dict[str, float] = defaultdict(float)
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        # pytest writes classname "tests.test_convert" (or "tests.test_x.TestClass"): the file is its module part.
        parts = case.get("classname", "").split(".")
        module = next((i for i, part in enumerate(parts) if part.startswith("test_")), len(parts) - 1)
        totals["/".join(parts[:module + 1]) + ".py"] += float(case.get("time", 0) or 0)
    return dict(totals)


def judge(seconds: dict[str, float], budgets: dict[str, float]) -> tuple[list[str], list[str]]:
    """(one line per file, slowest first; the lines of the files over budget)."""
    lines, over = [], []
    for name, took in sorted(seconds.items(), key=lambda item: -item[1]):
        budget = budgets.get(name)
        if budget is None:
            limit, shown = NEW_FILE_S, "no budget"
        else:
            limit, shown = GROWTH * max(budget, FLOOR_S), f"budget {budget:6.0f} s  x{took / max(budget, 1e-9):4.2f}"
        line = f"  {name:<42} {took:7.1f} s   {shown}"
        if took > limit:
            line += f"   OVER (limit {limit:.0f} s)"
            over.append(line)
        lines.append(line)
    return lines, over


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("junit", type=Path, help="pytest's --junitxml output")
    parser.add_argument("--record", action="store_true", help=f"write these times (rounded up) as {BUDGETS.name}")
    args = parser.parse_args(argv)
    seconds = file_seconds(args.junit)
    if not seconds:
        print(f"ci_budget: no test cases in {args.junit}", file=sys.stderr)
        return 1
    if args.record:
        recorded = {name: math.ceil(took) for name, took in sorted(seconds.items())}
        BUDGETS.write_text(json.dumps({"seconds_per_file": recorded, "total_s": math.ceil(sum(seconds.values()))},
                                      indent=1) + "\n", encoding="utf-8")
        print(f"Recorded {len(recorded)} budgets ({sum(recorded.values())} s in all) in {BUDGETS}")
        return 0
    recorded = json.loads(BUDGETS.read_text(encoding="utf-8"))
    lines, over = judge(seconds, recorded["seconds_per_file"])
    total = sum(seconds.values())
    print(f"Test time per file against {BUDGETS.name} (fails above x{GROWTH} of the budget):")
    print("\n".join(lines))
    print(f"  {'all files':<42} {total:7.1f} s   budget {recorded['total_s']:6.0f} s  x{total / recorded['total_s']:4.2f}")
    if over:
        print(f"ci_budget: {len(over)} test file(s) over budget. Make them cheaper, or, if the cost is deliberate, record "
              f"new budgets (see {Path(__file__).name}'s docstring) and say why in dev_log.txt:\n" + "\n".join(over),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
