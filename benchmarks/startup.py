"""How long `coi --help` and `coi schema` take to start, as whole processes.

Each command runs --runs times as a fresh process, in turn with its same-run ceilings
(`python -c pass`: the interpreter alone; `python -c "import msgspec"`: the one library
`coi schema` needs), so drift on a shared machine hits them all alike. Prints median, min
and max wall time per command, the median over the bare interpreter, the median CPU time
(user + system: what the process itself cost, less sensitive than wall time to others'
load on a shared machine), and PASS/MISS against the target: a median wall time under
0.2 s (issue 10).

    .venv/bin/python benchmarks/startup.py              # 30 runs each
    .venv/bin/python benchmarks/startup.py --runs 100
"""

from __future__ import annotations

import argparse
import compileall
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from common import machine_info

TARGET_SECONDS = 0.2


def commands(python: str) -> dict[str, list[str]]:
    """The commands timed, by label; `coi` as the user runs it: the console script when it
    is installed beside this interpreter."""
    script = Path(python).parent / "coi"
    coi = [str(script)] if script.exists() else [python, "-m", "ledger.cli"]
    return {
        "python -c pass": [python, "-c", "pass"],
        "python -c 'import msgspec'": [python, "-c", "import msgspec"],
        "coi --help": [*coi, "--help"],
        "coi schema": [*coi, "schema"],
    }


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall seconds of one run, and the CPU seconds (user + system) the kernel charged it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-400:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=30, help="timed runs of each command (default 30)")
    args = p.parse_args()
    if args.runs < 1:
        p.error("--runs must be at least 1")
    argvs = commands(sys.executable)
    print(f"command:  .venv/bin/python benchmarks/startup.py --runs {args.runs}")
    print(f"date:     {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    for line in machine_info():
        print(line)
    for label, argv in argvs.items():
        print(f"timed:    {label:<28} {' '.join(argv)}")

    # Bytecode for the project, as a user has it after any first run or a non-editable install
    # (PYTHONDONTWRITEBYTECODE, set on some machines, would have every run compile the sources).
    root = Path(__file__).resolve().parent.parent
    for package in ("ledger", "aggregates", "projections", "consumers"):
        compileall.compile_dir(root / package, quiet=1)
    for argv in argvs.values():  # warm-up: the file cache
        timed(argv)
    wall: dict[str, list[float]] = {label: [] for label in argvs}
    cpu: dict[str, list[float]] = {label: [] for label in argvs}
    for _ in range(args.runs):
        for label, argv in argvs.items():
            seconds, charged = timed(argv)
            wall[label].append(seconds)
            cpu[label].append(charged)

    bare = statistics.median(wall["python -c pass"])
    print(f"\n    seconds over {args.runs} runs each, interleaved; target: median wall < {TARGET_SECONDS} s")
    print(f"    {'command':<28} {'median':>8} {'min':>8} {'max':>8} {'- python':>9} {'cpu p50':>8}  target")
    for label, runs in wall.items():
        median = statistics.median(runs)
        verdict = ("PASS" if median < TARGET_SECONDS else "MISS") if label.startswith("coi") else "ceiling"
        print(
            f"    {label:<28} {median:>8.3f} {min(runs):>8.3f} {max(runs):>8.3f} "
            f"{median - bare:>+9.3f} {statistics.median(cpu[label]):>8.3f}  {verdict}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
