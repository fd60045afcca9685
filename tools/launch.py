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
``OMP_NUM_THREADS = cores / workers`` unless the variable is set (here or
by ``--env``), so the workers do not fight over the cores.

``ssh`` and ``mpi`` run the scheduler here with mxnet's ``dmlc_tracker``
(:func:`run_remote` restores the ``Thread.isAlive`` it calls) and start the
servers and workers with ``ssh`` (round-robin over the hostfile, servers
first) or one ``mpirun`` per role. Every argument reaches the remote command
as given (``--pretrained ''``, a name with spaces); ``--env`` values are set
in every process, ``--host-ip`` is the scheduler's address. Remote processes
are beyond this launcher's sight: train.py's ``--dist-timeout`` watchdog
stops them.

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
from concurrent.futures import ThreadPoolExecutor

# "Distributed: rank 1 of 2 workers ..." (train/distributed.py) tells which process got which rank
RANK_LINE = re.compile(r"Distributed: rank (\d+) of \d+ workers")
STOP_GRACE_S = 5.0
SERVERS_EXIT_GRACE_S = 30.0

# what dmlc_tracker's ssh mode copies from this machine's environment into every remote command
SSH_COPIED_VARIABLES = ("OMP_NUM_THREADS", "KMP_AFFINITY", "LD_LIBRARY_PATH", "AWS_ACCESS_KEY_ID",
                        "AWS_SECRET_ACCESS_KEY", "DMLC_INTERFACE")
SSH = ["ssh", "-o", "StrictHostKeyChecking=no"]
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# what the launcher itself gives each process: --env cannot change a process's role or the job's size
JOB_VARIABLES = ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER", "DMLC_NUM_WORKER",
                 "DMLC_NODE_HOST", "DMLC_JOB_CLUSTER")


def parse_env(items: Sequence[str]) -> dict[str, str]:
    """``--env NAME:VALUE`` as {NAME: VALUE}; a bare ``NAME`` takes this machine's value. ValueError for
    a malformed item, one naming a variable the launcher sets, or a bare name not set here."""
    variables = {}
    for item in items:
        name, colon, value = item.partition(":")
        if not ENV_NAME.fullmatch(name):
            raise ValueError(f"--env {item}: give NAME or NAME:VALUE, NAME a shell variable name")
        if name in JOB_VARIABLES:
            raise ValueError(f"--env {item}: the launcher sets {name}")
        if not colon:
            if name not in os.environ:
                raise ValueError(f"--env {item}: {name} is not set here; give {name}:VALUE")
            value = os.environ[name]
        variables[name] = value
    return variables


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
    parser.add_argument("--env", action="append", default=[],
                        help="NAME:VALUE (or NAME: its value here) set for every process")
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
    try:
        args.env = parse_env(args.env)
    except ValueError as err:
        parser.error(str(err))
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

    def __init__(self, num_workers: int, num_servers: int, command: list[str], extra_env: dict | None = None):
        self.num_workers, self.num_servers, self.command = num_workers, num_servers, command
        self.extra_env = extra_env or {}
        self.processes: list[Process] = []

    def env(self, role: str) -> dict:
        env = {**os.environ, **self.extra_env}
        env.update(DMLC_ROLE=role, DMLC_PS_ROOT_URI="127.0.0.1", DMLC_PS_ROOT_PORT=str(self.port),
                   DMLC_NUM_SERVER=str(self.num_servers), DMLC_NUM_WORKER=str(self.num_workers),
                   # every node binds and announces loopback, never another interface
                   DMLC_NODE_HOST="127.0.0.1", DMLC_INTERFACE="lo", PYTHONUNBUFFERED="1")
        if role == "worker" and "OMP_NUM_THREADS" not in env:
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
    job = LocalJob(args.num_workers, args.num_servers, command, args.env)

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


def read_hosts(hostfile: str) -> list[tuple[str, str]]:
    """(host, ssh port) per line of the hostfile: ``host``, ``host:port``, ``host slots=N`` (mpi's form)."""
    try:
        with open(hostfile) as f:
            lines = [line.split("slots=")[0].strip() for line in f]
    except OSError as err:
        raise SystemExit(f"error: -H {hostfile}: cannot read ({err.strerror})") from None
    hosts = [(host, port or "22") for host, _, port in (line.partition(":") for line in lines if line)]
    if not hosts:
        raise SystemExit(f"error: -H {hostfile}: lists no host")
    return hosts


def exports(variables: dict) -> str:
    """``export A=1; export B='x y'; ``: shell assignments that keep every value as it is."""
    return "".join(f"export {name}={shlex.quote(str(value))}; " for name, value in variables.items())


def ssh_commands(hosts: list[tuple[str, str]], num_servers: int, num_workers: int, job_env: dict,
                 extra_env: dict, folder: str, command: list[str]) -> list[str]:
    """One ssh shell line per server, then per worker, round-robin over ``hosts``.

    The remote shell line (the copied variables, ``--env``, the job's ``DMLC_*``, ``cd`` and the command,
    each word quoted) is quoted once more as a whole: ssh hands its words to the remote shell, which must
    see that line unchanged.
    """
    copied = {name: os.environ[name] for name in SSH_COPIED_VARIABLES if name in os.environ}
    lines = []
    for index in range(num_servers + num_workers):
        host, port = hosts[index % len(hosts)]
        role = "server" if index < num_servers else "worker"
        variables = {**copied, **extra_env, **job_env, "DMLC_ROLE": role, "DMLC_NODE_HOST": host}
        remote = f"{exports(variables)}cd {shlex.quote(folder)}; {shlex.join(command)}"
        lines.append(shlex.join([*SSH, host, "-p", port, remote]))
    return lines


def sync_folder(hosts: list[tuple[str, str]], folder: str, destination: str) -> None:
    """rsync ``folder`` to ``destination`` on every host at once; a failure is one line naming the host."""
    def rsync(host: str, port: str) -> None:
        line = shlex.join(["rsync", "-az", f"--rsh={shlex.join([*SSH, '-p', port])}", folder,
                           f"{host}:{destination}"])
        try:
            subprocess.check_call(line, shell=True)
        except subprocess.CalledProcessError as err:
            raise SystemExit(f"error: --sync-dst-dir: rsync to {host}:{destination} failed "
                             f"({signal_name(err.returncode)})") from None

    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        for done in [pool.submit(rsync, host, port) for host, port in hosts]:
            done.result()


def mpi_flavour() -> str:
    """``openmpi`` or ``mpich``, as ``mpirun --version`` says: they set a process's variables differently."""
    try:
        version = subprocess.run(["mpirun", "--version"], capture_output=True).stdout
    except OSError as err:
        raise SystemExit(f"error: --launcher mpi: cannot run mpirun ({err.strerror})") from None
    if b"Open MPI" in version:
        return "openmpi"
    if b"mpich" in version:
        return "mpich"
    raise SystemExit("error: --launcher mpi: mpirun --version names neither Open MPI nor MPICH")


def mpi_commands(flavour: str, hostfile: str, num_servers: int, num_workers: int, job_env: dict,
                 extra_env: dict, command: list[str]) -> list[str]:
    """One mpirun shell line for the workers and one for the servers, each over the hostfile, the variables
    set by Open MPI's ``-x NAME=VALUE`` or MPICH's ``-env NAME VALUE``."""
    lines = []
    for role, count in (("worker", num_workers), ("server", num_servers)):
        variables = {**extra_env, **job_env, "DMLC_JOB_CLUSTER": "mpi", "DMLC_ROLE": role}
        if flavour == "openmpi":
            flags = [word for name, value in variables.items() for word in ("-x", f"{name}={value}")]
        else:
            flags = [word for name, value in variables.items() for word in ("-env", name, str(value))]
        lines.append(shlex.join(["mpirun", "-n", str(count), *flags, "--hostfile", hostfile, *command]))
    return lines


def run_remote(args: argparse.Namespace, command: list[str]) -> int:
    """ssh / mpi: the scheduler runs here (dmlc_tracker's, which ships with mxnet), the servers and workers
    through ssh or mpirun. Returns when the scheduler exits."""
    if not hasattr(threading.Thread, "isAlive"):  # removed in Python 3.9; dmlc_tracker still calls it
        threading.Thread.isAlive = threading.Thread.is_alive
    try:
        from dmlc_tracker import tracker
    except ImportError:
        raise SystemExit("error: dmlc_tracker is not installed (it ships with the mxnet wheel)") from None
    # everything that can fail is checked before the scheduler starts: a failure leaves nothing running
    if args.launcher == "ssh":
        hosts = read_hosts(args.hostfile)
        folder = os.getcwd() + "/"
        if args.sync_dst_dir and args.sync_dst_dir != "None":
            sync_folder(hosts, folder, args.sync_dst_dir)
            folder = args.sync_dst_dir
    else:
        flavour = mpi_flavour()
    job_env = {"DMLC_NUM_WORKER": args.num_workers, "DMLC_NUM_SERVER": args.num_servers}
    scheduler = tracker.PSTracker(hostIP=tracker.get_host_ip(args.host_ip), cmd=shlex.join(command),
                                  envs={**args.env, **job_env})
    job_env.update(scheduler.slave_envs())  # DMLC_PS_ROOT_URI, DMLC_PS_ROOT_PORT
    if scheduler.alive():
        if args.launcher == "ssh":
            lines = ssh_commands(hosts, args.num_servers, args.num_workers, job_env, args.env, folder, command)
        else:
            lines = mpi_commands(flavour, args.hostfile, args.num_servers, args.num_workers, job_env, args.env,
                                 command)
        for line in lines:
            # as in dmlc_tracker: the job lasts as long as the scheduler, which waits for every worker
            threading.Thread(target=subprocess.check_call, args=(line,), kwargs={"shell": True},
                             daemon=True).start()
    scheduler.join()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args, command = parse_args(sys.argv[1:] if argv is None else argv)
    if args.launcher == "local":
        return run_local(args, command)
    return run_remote(args, command)


if __name__ == "__main__":
    sys.exit(main())
