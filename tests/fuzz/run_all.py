"""Runs every harness in a child process (a segfault or a GGML_ASSERT abort ends only that child)
with a fixed libFuzzer seed, and reports executions and findings per harness; exits 1 on any finding.

  python tests/fuzz/run_all.py                   # CI: bounded (`make fuzz`, at most ~2.5 minutes)
  python tests/fuzz/run_all.py --seconds 1800 --runs 0 --corpus fuzz-corpus   # by hand, 30 min each

Reproducible: `-seed` is fixed and the seed corpus generated; each harness stops at --runs
executions (or --seconds, a cap for slow machines). Crash inputs land in --artifacts; replay one
with `PYTHONPATH=scripts python tests/fuzz/fuzz_X.py ARTIFACT` (run_all.py sets that path for its children).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The development generators the harnesses seed from (make_tiny_head), as pytest's `pythonpath`.
SCRIPTS = HERE.parent.parent / "scripts"
# harness: executions in the bounded run (10-30 s each on a shared 2-core machine; --seconds caps each)
HARNESSES = {"fuzz_sift": 300000, "fuzz_audio": 20000, "fuzz_head": 100000, "fuzz_media": 8000, "fuzz_request": 300000,
              "fuzz_grammar": 100000}


def run_one(name, runs, seconds, corpus, artifacts, seed):
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(HERE / f"{name}.py"), f"-seed={seed}", f"-max_total_time={seconds}",
           "-timeout=60", "-rss_limit_mb=4096", "-print_final_stats=1",
           f"-artifact_prefix={artifacts}/{name}-", str(corpus)]
    if runs:
        cmd.insert(2, f"-runs={runs}")
    t0 = time.time()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SCRIPTS), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, cwd=HERE, env=env, capture_output=True, text=True, errors="replace",
                          timeout=seconds + 600)
    log = proc.stdout + proc.stderr
    m = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log) or re.findall(r"Done (\d+) runs", log)
    execs = int(m[-1]) if m else 0
    found = re.findall(r"(Uncaught Python exception|ERROR: libFuzzer)[^\n]*", log)
    return proc.returncode, execs, time.time() - t0, found, log


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=30, help="time cap per harness (a loaded machine runs fewer)")
    ap.add_argument("--runs", type=float, default=1.0, help="multiplier of the executions per harness (0: no limit)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--corpus", type=Path, help="keep corpora here (default: a fresh temporary directory)")
    ap.add_argument("--artifacts", type=Path, default=Path("build/fuzz-artifacts").resolve())
    ap.add_argument("only", nargs="*", help="harness names (default: all)")
    args = ap.parse_args()
    base = args.corpus.resolve() if args.corpus else Path(tempfile.mkdtemp(prefix="omnisift-fuzz-"))
    failed, total = [], 0
    for name, runs in HARNESSES.items():
        if args.only and name not in args.only:
            continue
        rc, execs, secs, found, log = run_one(name, int(runs * args.runs), args.seconds, base / name,
                                              args.artifacts.resolve(), args.seed)
        total += execs
        ok = rc == 0 and not found
        print(f"{name:14s} {'ok' if ok else 'FINDING'}: {execs} executions in {secs:.0f} s", flush=True)
        if not ok:
            failed.append(name)
            print("\n".join(log.splitlines()[-60:]), flush=True)
    print(f"fuzz: {total} executions, {len(failed)} harness(es) with findings{': ' + ', '.join(failed) if failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
