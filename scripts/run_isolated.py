"""Runs a pytest command on each test file in child processes that may crash, and sums up (`make test-vulkan`).

    python scripts/run_isolated.py [--max-crashes N] -- PYTEST_COMMAND ... -- FILE ...

For a device whose driver can take the process down (lavapipe, Mesa's software Vulkan device,
corrupts its heap in its queue thread under ggml's workloads: README, "Vulkan: `make test-vulkan`, a
target, not a CI gate"): each file runs in a process of its own with `-v`; when that process dies (a signal, or an exit
without pytest's summary line), the test it was running is recorded as crashed and the file is run
again with every test that already has a result, and the crashed one, deselected, until the file is
done or has crashed N times (default 40). Each test's outcome is read from pytest's `-v` lines.
lavapipe can also deadlock (every thread of the process waiting on a futex in libvulkan_lvp, the
main one in ggml-vulkan's fence wait): a process whose tree uses no CPU time for --stall seconds
(default 180; ggml spins on its fences and lavapipe computes on the CPU, so a working process never
idles that long) is killed and its test recorded as hung, then handled as a crash.
At the end: one line per file, the crashed tests, and the totals. Exit status 0 only when every test
passed or was skipped.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time

OUTCOMES = ("PASSED", "FAILED", "SKIPPED", "ERROR", "XFAIL", "XPASS")
LINE = re.compile(r"^(\S+::\S+) (" + "|".join(OUTCOMES) + r")\b")
TAIL = re.compile(r"\b(" + "|".join(OUTCOMES) + r")\s+\[\s*\d+%\]\s*$")   # a status after interleaved output
SUMMARY = re.compile(r"^=+ .*\b(passed|failed|skipped|error|errors|deselected|no tests ran)\b.* in [\d.]+s")


ROOTDIR = re.compile(r"^rootdir: (.+?)(,|$)")


def _tree_cpu_seconds(root: int) -> float:
    """CPU time (user + system) of a process and its live descendants, from /proc (Linux: the Vulkan
    target's machines)."""
    parent, ticks = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:   # gone meanwhile
            continue
        parent[int(entry)] = int(fields[1])
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    total = 0
    for pid, t in ticks.items():
        p = pid
        while p > 1 and p != root:
            p = parent.get(p, 0)
        total += t if p == root else 0
    return total / os.sysconf("SC_CLK_TCK")


def _watch_for_stall(proc: subprocess.Popen, stall: float, hung: threading.Event) -> None:
    """Kills PROC's process group when its tree has used no CPU time for STALL seconds."""
    last, since = -1.0, time.monotonic()
    while proc.poll() is None:
        time.sleep(min(10.0, stall / 4))
        used = _tree_cpu_seconds(proc.pid)
        if used - last > 0.05:
            last, since = used, time.monotonic()
        elif time.monotonic() - since >= stall:
            hung.set()
            os.killpg(proc.pid, signal.SIGKILL)
            return


def run_once(command: list[str], path: str, deselect: list[str],
             stall: float) -> tuple[int, dict[str, str], str, bool, str, bool]:
    """One process on PATH: (returncode, {test: outcome}, the test it was in when it ended, summary seen,
    pytest's rootdir, killed as hung). Test ids as pytest prints them (relative to the current
    directory); --deselect wants them relative to the rootdir, so they are given so."""
    prefix = os.path.relpath(os.path.abspath(path), _rootdir) if _rootdir else path
    args = [*command, "-v", *(f"--deselect={prefix}{t[len(path):]}" for t in deselect), path]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            start_new_session=True)   # its own process group: a hung one is killed whole
    hung = threading.Event()
    threading.Thread(target=_watch_for_stall, args=(proc, stall, hung), daemon=True).start()
    results, current, summary, rootdir = {}, "", False, ""
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        m = LINE.match(line)
        test, outcome = (m.group(1), m.group(2)) if m else ("", "")
        if not m and line.startswith(path + "::"):
            current = line.split(" ", 1)[0].strip()
        if not m and current and TAIL.search(line):
            test, outcome = current, TAIL.search(line).group(1)
        if test:
            # an ERROR line may follow a PASSED one for the same test (teardown): the worse one counts
            if results.get(test) not in ("FAILED", "ERROR"):
                results[test] = outcome
            current = ""
        if SUMMARY.match(line):
            summary = True
        if ROOTDIR.match(line):
            rootdir = ROOTDIR.match(line).group(1)
    return proc.wait(), results, current, summary, rootdir, hung.is_set()


_rootdir = ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-crashes", type=int, default=40, help="crashes per file before giving up on it")
    ap.add_argument("--stall", type=float, default=180.0,
                    help="seconds without CPU time after which a process is killed as hung")
    ap.add_argument("rest", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    if "--" not in rest:
        ap.error("usage: run_isolated.py -- PYTEST_COMMAND ... -- FILE ...")
    i = rest.index("--")
    command, files = rest[:i], rest[i + 1:]
    if not command or not files:
        ap.error("give a pytest command and at least one file")
    rows, crashed_tests, bad = [], [], False
    totals = {k: 0 for k in OUTCOMES}
    for path in files:
        t0 = time.monotonic()
        results: dict[str, str] = {}
        crashes: list[str] = []
        runs = 0
        while True:
            runs += 1
            print(f"=== {path} (process {runs})", flush=True)
            global _rootdir
            rc, got, current, summary, root, hung = run_once(command, path, sorted(results) + crashes, args.stall)
            _rootdir = _rootdir or root
            results.update(got)
            if rc >= 0 and summary:
                break
            how = (f"hung: no CPU time for {args.stall:.0f} s, killed" if hung
                   else f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc} without a summary")
            if not current:   # died outside a test (collection, start-up, exit): nothing left to skip
                crashes.append(f"{path} (outside a test, {how})")
                break
            crashes.append(current)
            crashed_tests.append(f"{current}: {how}")
            print(f"=== {current} CRASHED ({how}); going on with the rest of {path}", flush=True)
            if len(crashes) >= args.max_crashes:
                crashes.append(f"{path} (gave up after {len(crashes)} crashes)")
                break
        c = {k: sum(v == k for v in results.values()) for k in OUTCOMES}
        for k in OUTCOMES:
            totals[k] += c[k]
        bad |= bool(crashes) or c["FAILED"] > 0 or c["ERROR"] > 0 or c["XPASS"] > 0
        rows.append(f"{path}: {c['PASSED']} passed, {c['FAILED']} failed, {c['ERROR']} errors, "
                    f"{c['SKIPPED']} skipped, {len(crashes)} crashed; {runs} process(es), "
                    f"{time.monotonic() - t0:.0f} s")
        rows += [f"    crashed: {t}" for t in crashes if "(" in t]
    print("\n=== per file")
    for row in rows:
        print(row)
    if crashed_tests:
        print("=== crashed tests (the process died in them)")
        for t in crashed_tests:
            print(f"    {t}")
    print(f"=== total: {totals['PASSED']} passed, {totals['FAILED']} failed, {totals['ERROR']} errors, "
          f"{totals['SKIPPED']} skipped, {len(crashed_tests)} crashed", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
