"""Run a command as on a slower CPU with as many cores, to estimate how long it takes there.

    python tools/slow_cpu.py --share 0.55 -- bash .ci/run
    python tools/slow_cpu.py --share 0.55 -- python tools/benchmark.py -n toy -w 128 -b 16 --mode train

A slower CPU differs in its vector unit and in everything else (clock, caches, memory).
The vector unit is emulated exactly: oneDNN is capped at ``--isa`` (``DNNL_MAX_CPU_ISA``,
AVX2 by default), so convolutions run the kernels that CPU would, and ``config.cpu``
turns bfloat16 off as it would there. The rest is approximated: one busy process per
core, at the lower priority (nice level) that leaves a normal process ``--share`` of
the core, slows serial and parallel work alike. Calibrate ``--share`` with
``tools/benchmark.py`` against figures recorded on the slower machine
(docs/benchmarks.md, "The suite on a slower CPU").
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time

from config.cpu import ONEDNN_ISA_LEVELS
from config.errors import UserError, run_cli

# the kernel's CFS weights of nice levels 0..19 (sched_prio_to_weight)
NICE_WEIGHTS = (1024, 820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87, 70, 56, 45, 36, 29, 23, 18, 15)
HOG_MARK = "slow_cpu-busy-core"


def share_of(nice: int) -> float:
    """The share of a core a nice-0 process keeps beside one busy process at ``nice``."""
    return NICE_WEIGHTS[0] / (NICE_WEIGHTS[0] + NICE_WEIGHTS[nice])


def nice_for_share(share: float) -> int:
    """The nice level (0..19) of a busy process whose :func:`share_of` is nearest ``share``."""
    return min(range(len(NICE_WEIGHTS)), key=lambda nice: abs(share_of(nice) - share))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--share", type=float, default=0.55,
                   help="share of each core the command keeps, 0.5-0.98 (the slower CPU's speed / this one's)")
    p.add_argument("--isa", default="AVX2", choices=ONEDNN_ISA_LEVELS, help="oneDNN's instruction-set cap")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command and its arguments")
    args = p.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        raise UserError("no command: give it after --, e.g. -- bash .ci/run")
    if not share_of(len(NICE_WEIGHTS) - 1) >= args.share >= 0.5:
        raise UserError(f"--share {args.share}: one busy process a core leaves between 0.5 and "
                        f"{share_of(len(NICE_WEIGHTS) - 1):.3f} of it")
    return args


def start_busy_cores(nice: int) -> list[subprocess.Popen]:
    """One busy process pinned to each core this process may use, at ``nice``; returns once all are set."""
    code = ("import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])}); os.nice(int(sys.argv[2])); "
            "print('ready', flush=True)\nwhile True: pass")
    # the mark and this process's id name the busy processes, also for a slow_cpu.py run inside another
    busy = [subprocess.Popen([sys.executable, "-c", code, str(core), str(nice), HOG_MARK, str(os.getpid())],
                             stdout=subprocess.PIPE, text=True) for core in sorted(os.sched_getaffinity(0))]
    for process in busy:
        process.stdout.readline()
    return busy


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    nice = nice_for_share(args.share)
    env = dict(os.environ, DNNL_MAX_CPU_ISA=args.isa)
    setting = (f"DNNL_MAX_CPU_ISA={args.isa}, each of {len(os.sched_getaffinity(0))} cores shared with a busy "
               f"process at nice {nice} (share {share_of(nice):.3f})")
    print(f"slow_cpu: {shlex.join(args.command)} with {setting}", flush=True)
    busy = start_busy_cores(nice)
    start = time.time()
    try:
        returncode = subprocess.call(args.command, env=env)
    except OSError as err:
        raise UserError(f"{args.command[0]}: cannot run it ({err.strerror})") from None
    finally:
        for process in busy:
            process.kill()
        for process in busy:
            process.wait()
    print(f"slow_cpu: exit {returncode} after {(time.time() - start) / 60:.1f} min with {setting}", flush=True)
    return returncode


if __name__ == "__main__":
    run_cli(main)
