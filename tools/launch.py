"""Start a distributed training job: a scheduler, servers and workers that all run one command.

    python tools/launch.py -n 2 -s 1 --launcher local -- python train.py --kv-store dist_sync ...
    python tools/launch.py -n 4 -s 2 --launcher ssh -H hosts -- python train.py --kv-store dist_sync ...

Everything after ``--`` is the command, passed untouched: none of its flags
is read as one of the launcher's (``train.py --log`` is not ``--launcher``).

``--launcher local`` starts every process itself on 127.0.0.1 (a free port,
``DMLC_*`` variables, one process group each) and watches them: when one
exits non-zero or is killed, it stops all the others and exits 1 with
``error: worker 1 (pid N) died (SIGKILL); stopped the job``. Ctrl-C or
SIGTERM stops every process it started. Each worker gets
``OMP_NUM_THREADS = cores / workers`` unless the variable is set, so the
workers do not fight over the cores.

``ssh`` and ``mpi`` go through ``dmlc_tracker`` (installed with mxnet;
:func:`run_dmlc` restores the ``Thread.isAlive`` it calls). Remote processes are
beyond this launcher's sight: train.py's ``--dist-timeout`` watchdog stops them.

Differences from the original: docs/upstream.md.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

# "Distributed: rank 1 of 2 workers ..." (train/distributed.py) tells which process got which rank
RANK_LINE = re.compile(r"Distributed: rank (\d+) of \d+ workers")
STOP_GRACE_S = 5.0
SERVERS_EXIT_GRACE_S = 30.0


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """(launcher options, command): the command is everything after the first ``--``."""
    argv = list(argv)
    if "--" not in argv:
        raise SystemExit("error: give the command after --, e.g. tools/launch.py -n 2 -s 1 --launcher local "
                         "-- python train.py ...")
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("-n", "--num-workers", type=int, required=True, help="number of workers")
    parser.add_argument("-s", "--num-servers", type=int, default=None, help="number of servers (default: -n)")
    parser.add_argument("--launcher", choices=("local", "ssh", "mpi"), default="local",
                        help="local: every process on this machine over 127.0.0.1; ssh/mpi: dmlc_tracker")
    parser.add_argument("-H", "--hostfile", default=None, help="hosts, one a line (ssh, mpi)")
    parser.add_argument("--sync-dst-dir", default=None, help="ssh: rsync the working folder to this folder")
    parser.add_argument("--host-ip", default=None, help="ssh/mpi: the address the scheduler listens on")
    parser.add_argument("--env", action="append", default=[], help="ssh/mpi: NAME or NAME:VALUE for every process")
    args = parser.parse_args(options)
    if not command:
        parser.error("no command after --")
    if args.num_workers < 1:
        parser.error(f"-n {args.num_workers}: need at least one worker")
    if args.num_servers is None:
        args.num_servers = args.num_workers
    if args.num_servers < 1:
        parser.error(f"-s {args.num_servers}: the parameter server needs at least one server")
    if args.launcher != "local" and not args.hostfile:
        parser.error(f"--launcher {args.launcher} needs -H HOSTFILE")
    return args, command


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the scheduler binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def signal_name(returncode: int) -> str:
    """``SIGKILL`` for -9, ``exit status 2`` for 2."""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


class Process:
    """One child: its role, the launcher's index, its kvstore rank once it logged it, its output pump."""

    def __init__(self, role: str, index: int, command: list[str], env: dict):
        self.role, self.index, self.rank = role, index, None
        # a process group of its own: stopping it stops whatever it started too
        self.popen = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      start_new_session=True, bufsize=0)
        self.pump = threading.Thread(target=self._forward, daemon=True)
        self.pump.start()

    def _forward(self) -> None:
        """Copy the child's output to ours line by line, noting the rank it reports."""
        for line in iter(self.popen.stdout.readline, b""):
            if self.rank is None and self.role == "worker":
                match = RANK_LINE.search(line.decode(errors="replace"))
                if match:
                    self.rank = int(match.group(1))
            sys.stderr.buffer.write(line)
            sys.stderr.buffer.flush()

    @property
    def name(self) -> str:
        if self.role == "worker":
            return f"worker {self.rank if self.rank is not None else f'#{self.index} (rank unknown)'}"
        return self.role if self.role == "scheduler" else f"server {self.index}"

    def signal(self, signum: int) -> None:
        try:
            os.killpg(self.popen.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


class LocalJob:
    """The scheduler, ``num_servers`` servers and ``num_workers`` workers on this machine."""

    def __init__(self, num_workers: int, num_servers: int, command: list[str]):
        self.num_workers, self.num_servers, self.command = num_workers, num_servers, command
        self.processes: list[Process] = []

    def env(self, role: str) -> dict:
        env = dict(os.environ)
        env.update(DMLC_ROLE=role, DMLC_PS_ROOT_URI="127.0.0.1", DMLC_PS_ROOT_PORT=str(self.port),
                   DMLC_NUM_SERVER=str(self.num_servers), DMLC_NUM_WORKER=str(self.num_workers),
                   # every node binds and announces loopback, never another interface
                   DMLC_NODE_HOST="127.0.0.1", DMLC_INTERFACE="lo", PYTHONUNBUFFERED="1")
        if role == "worker" and "OMP_NUM_THREADS" not in os.environ:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.num_workers))
        return env

    def start(self) -> None:
        self.port = free_port()
        self.processes.append(Process("scheduler", 0, self.command, self.env("scheduler")))
        for index in range(self.num_servers):
            self.processes.append(Process("server", index, self.command, self.env("server")))
        for index in range(self.num_workers):
            self.processes.append(Process("worker", index, self.command, self.env("worker")))

    def stop(self) -> None:
        """SIGTERM every live process group, SIGKILL what is left after a grace period; wait for all."""
        live = [p for p in self.processes if p.popen.poll() is None]
        for process in live:
            process.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while any(p.popen.poll() is None for p in live) and time.monotonic() < deadline:
            time.sleep(0.05)
        for process in self.processes:
            process.signal(signal.SIGKILL)  # also any grandchild left in a group
            process.popen.wait()

    def watch(self) -> int:
        """Wait for the job; 0 when every worker exits 0, 1 (after stopping the rest) when any process fails."""
        workers = [p for p in self.processes if p.role == "worker"]
        finished_at = None
        while True:
            for process in self.processes:
                code = process.popen.poll()
                if code is None:
                    continue
                # a scheduler or server exits 0 only after every worker has finalized (ps-lite's exit
                # barrier), so only a non-zero status or a signal is a failure
                if code != 0:
                    how = "died" if code < 0 else "exited"
                    print(f"error: {process.name} (pid {process.popen.pid}) {how} ({signal_name(code)}); "
                          "stopped the job", file=sys.stderr, flush=True)
                    self.stop()
                    return 1
            if all(w.popen.poll() == 0 for w in workers):
                # the scheduler and servers leave once every worker has said goodbye
                finished_at = finished_at or time.monotonic()
                if all(p.popen.poll() is not None for p in self.processes):
                    return 0
                if time.monotonic() - finished_at > SERVERS_EXIT_GRACE_S:
                    self.stop()
                    return 0
            time.sleep(0.1)


def run_local(args: argparse.Namespace, command: list[str]) -> int:
    job = LocalJob(args.num_workers, args.num_servers, command)

    def on_signal(signum, _frame) -> None:
        print(f"launch.py: {signal.Signals(signum).name}: stopping the job", file=sys.stderr, flush=True)
        job.stop()
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        job.start()
        return job.watch()
    except BaseException:
        job.stop()
        raise


def run_dmlc(args: argparse.Namespace, command: list[str]) -> int:
    """ssh / mpi through dmlc_tracker, which ships with mxnet."""
    import threading as _threading

    if not hasattr(_threading.Thread, "isAlive"):  # removed in Python 3.9; dmlc_tracker still calls it
        _threading.Thread.isAlive = _threading.Thread.is_alive
    try:
        from dmlc_tracker import opts
    except ImportError:
        raise SystemExit("error: dmlc_tracker is not installed (it ships with the mxnet wheel)") from None
    dmlc_args = ["--num-workers", str(args.num_workers), "--num-servers", str(args.num_servers),
                 "--cluster", args.launcher, "--host-file", args.hostfile]
    if args.sync_dst_dir:
        dmlc_args += ["--sync-dst-dir", args.sync_dst_dir]
    if args.host_ip:
        dmlc_args += ["--host-ip", args.host_ip]
    for item in args.env:
        dmlc_args += ["--env", item]
    # one pre-quoted token: dmlc's argparse never sees the command's own flags, and its shell line keeps them
    dmlc_args.append(shlex.join(command))
    parsed = opts.get_opts(dmlc_args)
    if args.launcher == "ssh":
        from dmlc_tracker import ssh

        ssh.submit(parsed)
    else:
        from dmlc_tracker import mpi

        mpi.submit(parsed)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args, command = parse_args(sys.argv[1:] if argv is None else argv)
    if args.launcher == "local":
        return run_local(args, command)
    return run_dmlc(args, command)


if __name__ == "__main__":
    sys.exit(main())
