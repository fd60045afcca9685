"""The environment the scripts run with, and the processes tools/launch.py starts.

* Thread defaults (``config/__init__.py``, README "Threads"): a script started without them runs with
  ``OMP_NUM_THREADS`` = the core count, ``MXNET_CPU_WORKER_NTHREADS`` = 2 and
  ``MXNET_CUDNN_AUTOTUNE_DEFAULT`` = 0; values the user exported stay. Each script runs in a subprocess
  under :data:`PROBE`, which reports the environment and the OpenMP runtime's thread count when it exits.
* ``--launcher local``: each worker gets ``OMP_NUM_THREADS`` = cores / workers unless it is set.
* ``--launcher ssh`` / ``mpi``: the exact shell lines the launcher would run (ssh, rsync, mpirun), recorded
  in this process instead of run; the scheduler ``dmlc_tracker`` runs here is recorded too. The ssh lines
  then run through a fake ``ssh`` that hands the remote line to bash, as sshd does.
"""
from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
import threading
import types

import pytest
from helpers import ROOT, run_side_by_side, script_command

from tools import launch

# dmlc_tracker (mxnet's, not ours) starts its threads with the deprecated setDaemon()
pytestmark = pytest.mark.filterwarnings(r"ignore:setDaemon\(\) is deprecated:DeprecationWarning")

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MXNET_CPU_WORKER_NTHREADS", "MXNET_CUDNN_AUTOTUNE_DEFAULT")
CORES = os.cpu_count() or 1

# ``python -c PROBE SCRIPT ARGS...`` runs SCRIPT as ``__main__`` and, when the process exits, writes
# ``$PROBE_DIR/<role>-<pid>.json``: the thread variables, the DMLC role, whether mxnet was loaded and
# what each OpenMP runtime in the process would use (omp_get_max_threads). Under tools/launch.py only the
# workers run SCRIPT: a scheduler or server that imported mxnet would wait for the workers' kvstore.
PROBE = r"""
import atexit, ctypes, json, os, runpy, sys

VARIABLES = ("OMP_NUM_THREADS", "MXNET_CPU_WORKER_NTHREADS", "MXNET_CUDNN_AUTOTUNE_DEFAULT")

def report():
    with open("/proc/self/maps") as f:
        libs = sorted({line.split()[-1] for line in f if os.path.basename(line.split()[-1]).startswith(
            ("libgomp", "libiomp", "libomp"))})
    role = os.environ.get("DMLC_ROLE", "process")
    with open(os.path.join(os.environ["PROBE_DIR"], f"{role}-{os.getpid()}.json"), "w") as f:
        json.dump({"env": {name: os.environ.get(name) for name in VARIABLES}, "role": role,
                   "mxnet": "mxnet" in sys.modules,
                   "omp": [ctypes.CDLL(lib).omp_get_max_threads() for lib in libs]}, f)

atexit.register(report)
sys.argv = sys.argv[1:]
if os.environ.get("DMLC_ROLE", "worker") == "worker":
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def clean_env(**values: str) -> dict:
    """This process's environment without the thread variables (importing ``config`` set them here), plus
    ``values``."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES and not k.startswith("DMLC_")}
    return {**env, **values}


def reports(folder) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(folder.iterdir())]


def probe_found(proc: subprocess.CompletedProcess, folder) -> dict:
    """What :data:`PROBE` reported of a run that ended in ``proc``, its reports under ``folder``."""
    assert proc.returncode == 0, proc.stderr
    (found,) = reports(folder)
    assert found["mxnet"] and found["omp"], found  # mxnet and its OpenMP runtime were loaded
    return found


def probe_command(script: str) -> list[str]:
    return [sys.executable, "-c", PROBE, os.path.join(ROOT, script), "--help"]


# --- thread defaults --------------------------------------------------------------------------------
PROBED = {  # case: (script, the thread variables the user exported)
    "train.py": ("train.py", {}), "evaluate.py": ("evaluate.py", {}), "demo.py": ("demo.py", {}),
    "exported": ("train.py", {"OMP_NUM_THREADS": str(CORES + 1), "MXNET_CPU_WORKER_NTHREADS": "3",
                              "MXNET_CUDNN_AUTOTUNE_DEFAULT": "1"}),
}


@pytest.fixture(scope="module")
def probed(tmp_path_factory) -> dict[str, dict]:
    """Each case of :data:`PROBED` run under :data:`PROBE`, side by side: what it reported."""
    folders = {case: tmp_path_factory.mktemp("probe") for case in PROBED}
    runs = run_side_by_side({case: probe_command(script) for case, (script, _) in PROBED.items()}, cwd=ROOT,
                            timeout=120, envs={case: {**clean_env(**mine), "PROBE_DIR": str(folders[case])}
                                               for case, (_, mine) in PROBED.items()})
    return {case: probe_found(proc, folders[case]) for case, proc in runs.items()}


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train.py", "evaluate.py", "demo.py"])
def test_scripts_default_the_thread_settings(script, probed):
    found = probed[script]
    assert found["env"] == {"OMP_NUM_THREADS": str(CORES), "MXNET_CPU_WORKER_NTHREADS": "2",
                            "MXNET_CUDNN_AUTOTUNE_DEFAULT": "0"}
    # mxnet's own default is fewer threads than cores (1 on 2 cores)
    assert set(found["omp"]) == {CORES}


@pytest.mark.slow
def test_scripts_keep_the_thread_settings_a_user_exported(probed):
    found = probed["exported"]
    assert found["env"] == PROBED["exported"][1]
    assert set(found["omp"]) == {CORES + 1}


# --- --launcher local ---------------------------------------------------------------------------------
def test_local_workers_share_the_cores_unless_omp_num_threads_is_set(monkeypatch):
    job = launch.LocalJob(num_workers=2, num_servers=1, command=["true"])
    job.port = 9000
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert job.env("worker")["OMP_NUM_THREADS"] == str(max(1, CORES // 2))
    assert "OMP_NUM_THREADS" not in job.env("server")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert job.env("worker")["OMP_NUM_THREADS"] == "7"


@pytest.mark.slow
def test_local_job_workers_run_train_py_with_their_share_of_the_cores(tmp_path):
    """A real local job (1 server, 2 workers) whose workers run ``train.py --help`` under the probe: each
    worker's script sees cores / 2 threads, in its environment and in its OpenMP runtime."""
    command = [sys.executable, "-c", PROBE, os.path.join(ROOT, "train.py"), "--help"]
    argv = script_command("tools/launch.py") + ["-n", "2", "-s", "1", "--launcher", "local", "--", *command]
    proc = subprocess.run(argv, cwd=ROOT, env=clean_env(PROBE_DIR=str(tmp_path)), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = reports(tmp_path)
    assert sorted(r["role"] for r in found) == ["scheduler", "server", "worker", "worker"]
    share = max(1, CORES // 2)
    for worker in (r for r in found if r["role"] == "worker"):
        assert worker["env"] == {"OMP_NUM_THREADS": str(share), "MXNET_CPU_WORKER_NTHREADS": "2",
                                 "MXNET_CUDNN_AUTOTUNE_DEFAULT": "0"}
        assert worker["mxnet"] and set(worker["omp"]) == {share}


# --- --launcher ssh / mpi -------------------------------------------------------------------------------
AUTO_IP = "192.0.2.1"  # what the fake address lookup answers when no --host-ip is given


class Recorder:
    """Stands in for ``subprocess`` in tools/launch.py and dmlc_tracker's tracker: records every shell line
    instead of running it.

    The scheduler (the one call with an ``env``) returns once ``expected`` other lines were recorded (the
    launcher waits for it while the ssh/mpirun threads start), so that a run records the whole job.
    ``mpirun --version`` answers ``mpi_version`` (an OSError: no mpirun); a line for which ``fails`` is true
    exits 23.
    """

    PIPE = subprocess.PIPE
    CalledProcessError = subprocess.CalledProcessError

    def __init__(self, expected: int, mpi_version: bytes | OSError = b"mpirun (Open MPI) 4.1.2",
                 fails=lambda line: False):
        self.expected, self.mpi_version, self.fails = expected, mpi_version, fails
        self.commands: list[str] = []
        self.scheduler: tuple[str, dict, dict] | None = None
        self._all_started = threading.Event()
        self._lock = threading.Lock()

    def check_call(self, command, env=None, **kwargs) -> int:
        if env is not None:
            self.scheduler = (command, dict(env), kwargs)  # noted at once: a refused job must start none
            self._all_started.wait(20)
            return 0
        assert kwargs == {"shell": True} and isinstance(command, str)
        with self._lock:
            self.commands.append(command)
            if len(self.commands) == self.expected:
                self._all_started.set()
        if self.fails(command):
            raise subprocess.CalledProcessError(23, command)
        return 0

    def run(self, argv, **kwargs):
        assert argv == ["mpirun", "--version"] and kwargs == {"capture_output": True}
        if isinstance(self.mpi_version, OSError):
            raise self.mpi_version
        return types.SimpleNamespace(stdout=self.mpi_version, stderr=b"", returncode=0)


def dmlc_variables(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.startswith("DMLC_")}


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """``install(recorder) -> recorder``: tools/launch.py's and dmlc_tracker's processes recorded by it. The
    working folder is ``tmp_path``, which holds ``hosts`` (a host, and one with a port and mpi's slots=); the
    only variable ssh copies that is set here is ``OMP_NUM_THREADS=3``."""
    import dmlc_tracker.tracker

    monkeypatch.chdir(tmp_path)
    (tmp_path / "hosts").write_text("host1\nhost2:2222 slots=4\n")
    for name in ("KMP_AFFINITY", "LD_LIBRARY_PATH", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "DMLC_INTERFACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(dmlc_tracker.tracker, "get_host_ip", lambda ip=None: AUTO_IP if ip in (None, "auto") else ip)

    def install(recorder: Recorder) -> Recorder:
        for module in (launch, dmlc_tracker.tracker):
            monkeypatch.setattr(module, "subprocess", recorder)
        return recorder

    return install


@pytest.fixture
def dmlc(recorded):
    """``run(launcher_args, command, expected, **recorder_kwargs) -> Recorder``: tools/launch.py's main, its
    processes recorded (:func:`recorded`)."""
    def run(launcher_args: list[str], command: list[str], expected: int, **kwargs) -> Recorder:
        recorder = recorded(Recorder(expected, **kwargs))
        assert launch.main([*launcher_args, "--", *command]) == 0
        assert len(recorder.commands) == expected and recorder.scheduler is not None
        return recorder

    return run


@pytest.fixture
def refused(recorded):
    """``run(launcher_args, **recorder_kwargs) -> (message, Recorder)``: tools/launch.py's main stopped with
    a one-line error before it started the scheduler."""
    def run(launcher_args: list[str], **kwargs) -> tuple[str, Recorder]:
        recorder = recorded(Recorder(0, **kwargs))
        with pytest.raises(SystemExit) as stopped:
            launch.main([*launcher_args, "--", *TRAIN])
        assert recorder.scheduler is None
        return str(stopped.value), recorder

    return run


TRAIN = ["python", "train.py", "--kv-store", "dist_sync", "--prefix", "/shared/model/ssd"]
SSH_JOB = ["-n", "2", "-s", "1", "--launcher", "ssh", "-H", "hosts"]
MPI_JOB = ["-n", "2", "-s", "1", "--launcher", "mpi", "-H", "hosts"]


def port_of(recorder: Recorder) -> str:
    return recorder.scheduler[1]["DMLC_PS_ROOT_PORT"]


def test_ssh_commands_per_host_and_role(dmlc, tmp_path):
    """-n 2 -s 1 over two hosts: servers first, then workers, round-robin over the hostfile; each command
    exports the user's OMP_NUM_THREADS and the job's DMLC_* variables, enters the working folder and runs the
    command; the scheduler runs here with the command as one shell line."""
    job = dmlc([*SSH_JOB, "--host-ip", "10.1.2.3"], TRAIN, expected=3)
    port = port_of(job)

    def ssh(host: str, port_flag: str, role: str) -> str:
        return (f"ssh -o StrictHostKeyChecking=no {host} -p {port_flag} 'export OMP_NUM_THREADS=3; "
                f"export DMLC_NUM_WORKER=2; export DMLC_NUM_SERVER=1; export DMLC_PS_ROOT_URI=10.1.2.3; "
                f"export DMLC_PS_ROOT_PORT={port}; export DMLC_ROLE={role}; export DMLC_NODE_HOST={host}; "
                f"cd {tmp_path}/; python train.py --kv-store dist_sync --prefix /shared/model/ssd'")

    assert sorted(job.commands) == sorted([ssh("host1", "22", "server"), ssh("host2", "2222", "worker"),
                                           ssh("host1", "22", "worker")])
    command, env, kwargs = job.scheduler
    assert command == "python train.py --kv-store dist_sync --prefix /shared/model/ssd"
    assert dmlc_variables(env) == {"DMLC_ROLE": "scheduler", "DMLC_PS_ROOT_URI": "10.1.2.3",
                                   "DMLC_PS_ROOT_PORT": port, "DMLC_NUM_WORKER": "2", "DMLC_NUM_SERVER": "1"}
    assert kwargs == {"shell": True, "executable": "/bin/bash"}


def test_ssh_sync_dst_dir_copies_the_folder_to_each_host_and_runs_there(dmlc, tmp_path):
    job = dmlc([*SSH_JOB, "--host-ip", "10.1.2.3", "--sync-dst-dir", "/remote/work"], TRAIN, expected=5)
    rsync = sorted(shlex.split(c) for c in job.commands if c.startswith("rsync"))
    assert rsync == [["rsync", "-az", f"--rsh=ssh -o StrictHostKeyChecking=no -p {port}", f"{tmp_path}/",
                      f"{host}:/remote/work"] for host, port in (("host1", "22"), ("host2", "2222"))]
    remote = [c for c in job.commands if c.startswith("ssh")]
    assert len(remote) == 3 and all("; cd /remote/work; python train.py " in c for c in remote)


def test_ssh_failed_rsync_is_one_line_before_the_scheduler_starts(refused):
    message, job = refused([*SSH_JOB, "--sync-dst-dir", "/remote/work"], fails=lambda line: "host2:" in line)
    assert message == "error: --sync-dst-dir: rsync to host2:/remote/work failed (exit status 23)"
    assert all(c.startswith("rsync") for c in job.commands)  # no ssh line either


@pytest.mark.parametrize("hosts, reason", [(None, "cannot read (No such file or directory)"),
                                           ("\n  \n", "lists no host")])
def test_ssh_unreadable_or_empty_hostfile_is_one_line(refused, tmp_path, hosts, reason):
    if hosts is None:
        (tmp_path / "hosts").unlink()
    else:
        (tmp_path / "hosts").write_text(hosts)
    message, job = refused(SSH_JOB)
    assert message == f"error: -H hosts: {reason}" and job.commands == []


@pytest.mark.parametrize("version, env_flag", [(b"mpirun (Open MPI) 4.1.2", "-x {}={}"),
                                               (b"HYDRA build details:\n    Version: 3.3 (mpich)", "-env {} {}")])
def test_mpi_commands_per_role(dmlc, version, env_flag):
    """One mpirun for the workers and one for the servers, over the hostfile, the job's variables passed in
    the syntax of the MPI found (Open MPI's -x, MPICH's -env)."""
    job = dmlc(MPI_JOB, TRAIN, expected=2, mpi_version=version)
    port = port_of(job)

    def mpirun(count: int, role: str) -> list[str]:
        variables = {"DMLC_NUM_WORKER": 2, "DMLC_NUM_SERVER": 1, "DMLC_PS_ROOT_URI": AUTO_IP,
                     "DMLC_PS_ROOT_PORT": port, "DMLC_JOB_CLUSTER": "mpi", "DMLC_ROLE": role}
        flags = " ".join(env_flag.format(k, v) for k, v in variables.items())
        return ["mpirun", "-n", str(count), *flags.split(), "--hostfile", "hosts", *TRAIN]

    assert sorted(shlex.split(c) for c in job.commands) == sorted([mpirun(2, "worker"), mpirun(1, "server")])
    assert job.scheduler[1]["DMLC_ROLE"] == "scheduler"


@pytest.mark.parametrize("version, reason", [(b"Intel(R) MPI Library 2021", "mpirun --version names neither "
                                              "Open MPI nor MPICH"),
                                             (FileNotFoundError(2, "No such file or directory"),
                                              "cannot run mpirun (No such file or directory)")])
def test_mpi_unknown_or_missing_mpirun_is_one_line(refused, version, reason):
    message, job = refused(MPI_JOB, mpi_version=version)
    assert message == f"error: --launcher mpi: {reason}" and job.commands == []


QUOTED = [sys.executable, "-c", "import json, os, sys; print(json.dumps([sys.argv[1:], os.environ.get('FOO')]))",
          "--pretrained", "", "--class-names", "my names (2).txt"]
AWKWARD = "a b 'c' \"d\" $HOME ;"  # an --env value the remote shell must take as it is


def test_mpi_passes_empty_and_spaced_arguments_untouched(dmlc):
    job = dmlc(MPI_JOB, QUOTED, expected=2)
    for command in job.commands:
        assert shlex.split(command)[-len(QUOTED):] == QUOTED
    assert shlex.split(job.scheduler[0]) == QUOTED


def run_through_fake_ssh(command: str, folder) -> subprocess.CompletedProcess:
    """Run a recorded ssh command line in a shell whose ``ssh`` runs the remote command here, in bash, as
    sshd would: the words after ``-o OPTION HOST -p PORT`` joined by spaces."""
    fake = folder / "bin" / "ssh"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/bin/sh\nshift 5\nexec bash -c "$*"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(command, shell=True, env=env, capture_output=True, text=True, timeout=60)


def test_ssh_passes_empty_and_spaced_arguments_and_env_values_untouched(dmlc, tmp_path):
    job = dmlc([*SSH_JOB, "--host-ip", "10.1.2.3", "--env", f"FOO:{AWKWARD}"], QUOTED, expected=3)
    for command in job.commands:
        done = run_through_fake_ssh(command, tmp_path)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == [QUOTED[3:], AWKWARD]


@pytest.mark.parametrize("job_flags, expected", [(SSH_JOB + ["--host-ip", "10.1.2.3"], 3), (MPI_JOB, 2)])
def test_env_reaches_every_process(dmlc, job_flags, expected):
    job = dmlc([*job_flags, "--env", "FOO:bar", "--env", "OMP_NUM_THREADS:1"], TRAIN, expected=expected)
    for command in job.commands:
        words = shlex.split(command)
        if words[0] == "mpirun":
            assert words[3:7] == ["-x", "FOO=bar", "-x", "OMP_NUM_THREADS=1"], command
        else:  # the remote line: --env's OMP_NUM_THREADS replaces the one ssh copies from here (3)
            assert words[-1].startswith("export OMP_NUM_THREADS=1; export FOO=bar; export DMLC_"), command
    assert job.scheduler[1]["FOO"] == "bar" and job.scheduler[1]["OMP_NUM_THREADS"] == "1"


def test_mpi_host_ip_is_the_scheduler_address(dmlc):
    job = dmlc([*MPI_JOB, "--host-ip", "10.1.2.3"], TRAIN, expected=2)
    assert job.scheduler[1]["DMLC_PS_ROOT_URI"] == "10.1.2.3"
    assert all("DMLC_PS_ROOT_URI=10.1.2.3" in command for command in job.commands)


# --- --env ------------------------------------------------------------------------------------------------
def test_env_flag_takes_name_value_or_this_machines_value(monkeypatch):
    monkeypatch.setenv("MINE", "here")
    args, _ = launch.parse_args(["-n", "1", "--env", "A:x:y", "--env", "MINE", "--env", "EMPTY:", "--", "true"])
    assert args.env == {"A": "x:y", "MINE": "here", "EMPTY": ""}


@pytest.mark.parametrize("item, reason", [("1A:x", "give NAME or NAME:VALUE, NAME a shell variable name"),
                                          ("A B:x", "give NAME or NAME:VALUE, NAME a shell variable name"),
                                          ("DMLC_ROLE:worker", "the launcher sets DMLC_ROLE"),
                                          ("NOT_SET_HERE", "NOT_SET_HERE is not set here; give NOT_SET_HERE:VALUE")])
def test_env_flag_refuses_in_one_line(item, reason, monkeypatch, capsys):
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    with pytest.raises(SystemExit):
        launch.parse_args(["-n", "1", "--env", item, "--", "true"])
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: --env {item}: {reason}")


def test_env_reaches_local_processes_and_its_omp_num_threads_wins(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    job = launch.LocalJob(num_workers=2, num_servers=1, command=["true"],
                          extra_env={"FOO": "x y", "OMP_NUM_THREADS": "5"})
    job.port = 9000
    assert job.env("server")["FOO"] == job.env("worker")["FOO"] == "x y"
    assert job.env("worker")["OMP_NUM_THREADS"] == "5"
