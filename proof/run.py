"""Run the proof suites and report what stripeline survived.

    python proof/run.py            # the full form: writes PROOF.md (make proof)
    python proof/run.py --short    # the short form CI runs: prints, writes nothing
    python proof/run.py --short fuzz    # some suites only

The full form writes ``PROOF.md`` at the root of the checkout: the machine,
the date, the commit, every figure of every suite and each criterion of
issue 8 passed or failed. The short form runs the same suites smaller (a few
minutes in all) and prints the same report; with ``--out FILE`` it writes it
there instead, never over ``PROOF.md``. Exit status 1 when a criterion fails.

PostgreSQL runs when ``STRIPELINE_TEST_POSTGRES_URL`` is set (each suite in a
fresh database of its own, dropped after). Everything listens on and talks to
127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import _common as common
import duplicates
import fuzz
import kill
import outage
import secret_leaks
import soak

SUITES: dict[str, Callable[[bool, Path], common.SuiteResult]] = {
    "fuzz": fuzz.run,
    "duplicates": duplicates.run,
    "kill": kill.run,
    "outage": outage.run,
    "soak": soak.run,
    "secrets": secret_leaks.run,  # last: it also searches the other suites' logs
}


def render(results: list[common.SuiteResult], machine: dict[str, str], short: bool) -> str:
    lines = [
        "# PROOF",
        "",
        "What stripeline survived on one machine, written by `make proof`"
        + (" (here its short form, `make proof-short`)" if short else "")
        + ". What each suite does and what is promised: "
        "[docs/reliability.md](docs/reliability.md).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in machine.items()]
    known = [c for r in results for c in r.criteria if not c.passed and c.known_open]
    verdict = "PASS" if all(r.passed for r in results) else "FAIL"
    if known:
        verdict += f", with {len(known)} known open finding(s) (failed, not blocking)"
    lines += ["", f"## Result: {verdict}", "", "| suite | criterion | measured | result |"]
    lines += ["|---|---|---|---|"]
    for r in results:
        for c in r.criteria:
            mark = "pass" if c.passed else "**FAIL**"
            if not c.passed and c.known_open:
                mark += f" (known open: {c.known_open})"
            lines.append(f"| {r.name} | {c.name} | {c.measured} | {mark} |")
    for r in results:
        lines += ["", f"## {r.title}", "", f"{r.seconds:.0f} s.", "", "| figure | value |"]
        lines += ["|---|---|"]
        lines += [f"| {name.strip()} | {value} |" for name, value in r.figures]
        if r.notes:
            lines.append("")
            lines += [f"- {note}" for note in r.notes]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="the short form (CI)")
    parser.add_argument("--out", type=Path, help="write the report here (not PROOF.md)")
    parser.add_argument("suites", nargs="*", help=f"some of: {', '.join(SUITES)}")
    args = parser.parse_args()
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s): {', '.join(unknown)} (known: {', '.join(SUITES)})")
    chosen = args.suites or list(SUITES)
    results: list[common.SuiteResult] = []
    machine = common.machine()  # the date and the commit the run starts from
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="stripeline-proof-") as work:
        for name in chosen:
            print(f"proof: {name} ({'short' if args.short else 'full'})", flush=True)
            directory = Path(work) / name
            directory.mkdir()
            try:
                result = SUITES[name](args.short, directory)
            except Exception:
                traceback.print_exc()
                result = common.SuiteResult(
                    name,
                    name,
                    [],
                    [common.Criterion("the suite ran to its end", False, "it raised (above)")],
                    [],
                )
            for c in result.criteria:
                print(f"  {c.mark}  {c.name}: {c.measured}", flush=True)
            results.append(result)
    report = render(results, machine, args.short)
    if args.out:
        args.out.write_text(report)
        print(f"proof: report written to {args.out}")
    elif args.short or args.suites:
        print(report)
    else:
        (common.ROOT / "PROOF.md").write_text(report)
        print("proof: PROOF.md written")
    print(f"proof: {time.monotonic() - started:.0f} s")
    sys.exit(0 if all(r.passed for r in results) else 1)


if __name__ == "__main__":
    main()
