"""How many plausible wrong answers the checks catch and name, per lab (issue 22): a table for docs/checks.md.

    python benchmarks/mistake_naming.py              # the table
    python benchmarks/mistake_naming.py --unnamed    # and the messages of the mistakes no check names

The wrong answers are tests/mistake_suite.py (written as students write them, with the phrase a helpful
message contains); "named" means the message contains that phrase. Counts, not seconds: the same on every
machine (tests/test_mistake_naming.py also runs them rounded as another CPU would round them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unnamed", action="store_true", help="print the messages of unnamed mistakes")
    args = parser.parse_args(argv)

    import mistake_suite

    rows = mistake_suite.run_suite()
    table = mistake_suite.rates(rows)
    print(f"{'lab':<20} {'exercises':>9} {'mistakes':>8} {'caught':>7} {'named':>6} {'rate':>7}")
    exercises = {}
    for r in rows:
        exercises.setdefault(r["lab"], set()).add(r["exercise"])
    for lab, (n, caught, named) in sorted(table.items()):
        print(f"{lab:<20} {len(exercises[lab]):>9} {n:>8} {caught:>7} {named:>6} {named / n:>7.1%}")
    n, caught, named = (sum(v[i] for v in table.values()) for i in range(3))
    print(f"{'all':<20} {sum(map(len, exercises.values())):>9} {n:>8} {caught:>7} {named:>6} {named / n:>7.1%}")
    if args.unnamed:
        for r in rows:
            if not r["named"]:
                print(f"\n{r['lab']} {r['exercise']} [{r['label']}]:\n  {r['message']}")


if __name__ == "__main__":
    main()
