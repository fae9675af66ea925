"""How long `coi --help` and `coi schema` take to start, as whole processes.

Each command runs --runs times as a fresh process, in turn with its same-run ceilings
(`python -c pass`: the interpreter alone; `python -c "import msgspec"`: the one library
`coi schema` needs), so drift on a shared machine hits them all alike. Prints median, min
and max wall time per command, the median over the bare interpreter, the median CPU time
(user + system: what the process itself cost, less sensitive than wall time to others'
load on a shared machine), and PASS/MISS against the target: a median wall time under
0.2 s (issue 10). With --baseline DIR (another revision's files, e.g. from
`git archive main | tar -x -C DIR`), the same two commands of that code run in the same
rounds, as `python -m ledger.cli` in DIR with this interpreter.

    .venv/bin/python benchmarks/startup.py              # 30 runs each
    .venv/bin/python benchmarks/startup.py --runs 100 --baseline /tmp/coi-main
"""

from __future__ import annotations

import argparse
import compileall
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from common import machine_info

TARGET_SECONDS = 0.2
PACKAGES = ("ledger", "aggregates", "projections", "consumers")


@dataclass
class Command:
    argv: list[str]
    cwd: Path | None = None
    target: bool = False  # judged against TARGET_SECONDS; the others are ceilings or a baseline


def commands(python: str, baseline: Path | None) -> dict[str, Command]:
    """The commands timed, by label; `coi` as the user runs it: the console script when it
    is installed beside this interpreter."""
    script = Path(python).parent / "coi"
    coi = [str(script)] if script.exists() else [python, "-m", "ledger.cli"]
    timed = {
        "python -c pass": Command([python, "-c", "pass"]),
        "python -c 'import msgspec'": Command([python, "-c", "import msgspec"]),
        "coi --help": Command([*coi, "--help"], target=True),
        "coi schema": Command([*coi, "schema"], target=True),
    }
    if baseline is not None:
        for what in ("--help", "schema"):
            timed[f"coi {what} (baseline)"] = Command([python, "-m", "ledger.cli", what], cwd=baseline)
    return timed


def timed(command: Command) -> tuple[float, float]:
    """Wall seconds of one run, and the CPU seconds (user + system) the kernel charged it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        command.argv, cwd=command.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command.argv)} exited {done.returncode}: {done.stderr.decode()[-400:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=30, help="timed runs of each command (default 30)")
    p.add_argument("--baseline", type=Path, help="a checkout of another revision, timed alongside")
    args = p.parse_args()
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.baseline is not None and not (args.baseline / "ledger" / "cli").is_dir():
        p.error(f"--baseline {args.baseline}: no ledger/cli there")
    timings = commands(sys.executable, args.baseline)
    baseline = f" --baseline {args.baseline}" if args.baseline else ""
    print(f"command:  .venv/bin/python benchmarks/startup.py --runs {args.runs}{baseline}")
    print(f"date:     {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    for line in machine_info():
        print(line)
    for label, command in timings.items():
        where = f"  (in {command.cwd})" if command.cwd else ""
        print(f"timed:    {label:<28} {' '.join(command.argv)}{where}")

    # Bytecode for the project, as a user has it after any first run or a non-editable install
    # (PYTHONDONTWRITEBYTECODE, set on some machines, would have every run compile the sources).
    for root in [Path(__file__).resolve().parent.parent, *([args.baseline] if args.baseline else [])]:
        for package in PACKAGES:
            compileall.compile_dir(root / package, quiet=1)
    for command in timings.values():  # warm-up: the file cache
        timed(command)
    wall: dict[str, list[float]] = {label: [] for label in timings}
    cpu: dict[str, list[float]] = {label: [] for label in timings}
    for _ in range(args.runs):
        for label, command in timings.items():
            seconds, charged = timed(command)
            wall[label].append(seconds)
            cpu[label].append(charged)

    bare = statistics.median(wall["python -c pass"])
    print(f"\n    seconds over {args.runs} runs each, interleaved; target: median wall < {TARGET_SECONDS} s")
    print(f"    {'command':<28} {'median':>8} {'min':>8} {'max':>8} {'- python':>9} {'cpu p50':>8}  target")
    for label, runs in wall.items():
        median = statistics.median(runs)
        if timings[label].target:
            verdict = "PASS" if median < TARGET_SECONDS else "MISS"
        else:
            verdict = "baseline" if timings[label].cwd else "ceiling"
        print(
            f"    {label:<28} {median:>8.3f} {min(runs):>8.3f} {max(runs):>8.3f} "
            f"{median - bare:>+9.3f} {statistics.median(cpu[label]):>8.3f}  {verdict}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
