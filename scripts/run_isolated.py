"""Runs a pytest command once per test file, each in its own process, and sums up (`make test-vulkan`).

    python scripts/run_isolated.py [--timeout S] -- PYTEST_COMMAND ... -- FILE ...

For a device whose driver can take the process down (lavapipe, Mesa's software Vulkan device,
corrupts its heap under some ggml workloads: README, "A Vulkan target"): a crash ends one file's
process, not the run. Each file's output is streamed; its counts are read from a JUnit XML report.
A file whose process dies by a signal (or ends without a report) is reported as crashed, with the
signal and the last test it started (pytest's faulthandler prints the Python stack on SIGSEGV /
SIGABRT). At the end: one line per file and the totals. Exit status 0 only when every file passed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET


def counts(report: str) -> dict[str, int]:
    root = ET.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for s in suites:
        for k in total:
            total[k] += int(s.get(k, 0))
    total["passed"] = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
    return total


def run_one(command: list[str], path: str, report: str, timeout: float | None) -> tuple[int, str]:
    """Runs COMMAND on one file; returns (returncode, the last test id it started)."""
    last = ""
    proc = subprocess.Popen([*command, "-v", f"--junitxml={report}", path],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    deadline = None if timeout is None else time.monotonic() + timeout
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        if "::" in line and line.startswith(path):
            last = line.split(" ", 1)[0]
        if deadline is not None and time.monotonic() > deadline:
            proc.kill()
            break
    try:
        rc = proc.wait(timeout=None if timeout is None else max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    return rc, last


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timeout", type=float, default=None, help="seconds per file (default: none)")
    ap.add_argument("rest", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    if "--" not in rest:
        ap.error("usage: run_isolated.py -- PYTEST_COMMAND ... -- FILE ...")
    i = rest.index("--")
    command, files = rest[:i], rest[i + 1:]
    if not command or not files:
        ap.error("give a pytest command and at least one file")
    rows, failed = [], False
    totals = {"passed": 0, "failures": 0, "errors": 0, "skipped": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for path in files:
            report = os.path.join(tmp, os.path.basename(path) + ".xml")
            t0 = time.monotonic()
            print(f"=== {path}", flush=True)
            rc, last = run_one(command, path, report, args.timeout)
            secs = time.monotonic() - t0
            if rc < 0 or not os.path.exists(report):
                how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}, no report"
                rows.append(f"{path}: CRASHED ({how}) after {secs:.0f} s, in or after {last or 'collection'}")
                failed = True
                continue
            c = counts(report)
            for k in totals:
                totals[k] += c[k]
            failed |= rc != 0
            rows.append(f"{path}: {c['passed']} passed, {c['failures']} failed, {c['errors']} errors, "
                        f"{c['skipped']} skipped in {secs:.0f} s (exit status {rc})")
    print("\n=== per file (each in its own process)")
    for row in rows:
        print(row)
    crashed = sum("CRASHED" in r for r in rows)
    print(f"=== total: {totals['passed']} passed, {totals['failures']} failed, {totals['errors']} errors, "
          f"{totals['skipped']} skipped; {crashed} file(s) crashed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
