"""tools/slow_cpu.py: the share a nice level leaves, and what the command runs beside (the oneDNN cap and
one busy process a core at that nice level, gone when the command ends)."""
import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT, load_script

slow_cpu = load_script("tools/slow_cpu")

# run inside the command: the busy processes the tool (its parent) started, their nice level and cores, and the cap
PROBE = """
import json, os
mark, busy = [b'slow_cpu-' + b'busy-core', str(os.getppid()).encode()], []
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            if f.read().split(bytes(1))[-3:-1] == mark:
                busy.append([os.getpriority(os.PRIO_PROCESS, int(pid)), sorted(os.sched_getaffinity(int(pid)))])
    except (OSError, ProcessLookupError):
        pass
print(json.dumps({'cap': os.environ.get('DNNL_MAX_CPU_ISA'), 'busy': sorted(busy)}))
"""


def _busy_processes(tool_pid: int) -> list[int]:
    """The busy processes the tool with process id ``tool_pid`` started that still run."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv[-3:-1] == [slow_cpu.HOG_MARK.encode(), str(tool_pid).encode()]:
            found.append(int(pid))
    return found


def _run(argv: list[str], timeout: int = 120) -> tuple[subprocess.CompletedProcess, int]:
    """tools/slow_cpu.py with ``argv`` from the repository root: (its result, its process id)."""
    with subprocess.Popen([sys.executable, "tools/slow_cpu.py", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), proc.pid


def test_share_of_a_nice_level_from_the_cfs_weights():
    # nice 0 against nice 0: half each; nice 1 (weight 820): 1024 / 1844; 0.98 lies nearer nice 17 (1024 / 1047 =
    # 0.9780) than nice 18 (1024 / 1042 = 0.9827)
    assert slow_cpu.share_of(0) == 0.5
    assert slow_cpu.share_of(1) == pytest.approx(0.5553, abs=1e-4)
    assert slow_cpu.share_of(19) == pytest.approx(1024 / 1039)
    assert [slow_cpu.nice_for_share(s) for s in (0.5, 0.55, 0.56, 0.6, 0.61, 0.66, 0.98)] == [0, 1, 1, 2, 2, 3, 17]


def test_the_command_runs_capped_beside_one_busy_process_a_core(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    result, tool_pid = _run(["--share", "0.6", "--", sys.executable, str(probe)])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    seen = json.loads(lines[1])
    cores = sorted(os.sched_getaffinity(0))
    assert seen == {"cap": "AVX2", "busy": [[2, [core]] for core in cores]}
    assert lines[0].startswith("slow_cpu: ") and f"nice 2 (share {slow_cpu.share_of(2):.3f})" in lines[0]
    assert lines[2].startswith("slow_cpu: exit 0 after ")
    assert _busy_processes(tool_pid) == []


def test_the_exit_status_is_the_commands_and_the_busy_processes_end_with_it():
    result, tool_pid = _run(["--isa", "AVX512_CORE", "--", "sh", "-c", "echo $DNNL_MAX_CPU_ISA; exit 3"])
    assert result.returncode == 3
    assert result.stdout.splitlines()[1] == "AVX512_CORE"
    assert _busy_processes(tool_pid) == []


@pytest.mark.parametrize("argv, message", [
    (["--share", "0.3", "--", "true"],
     "error: --share 0.3: one busy process a core leaves between 0.5 and 0.986 of it"),
    (["--"], "error: no command: give it after --, e.g. -- bash .ci/run"),
    (["--", "no-such-command-here"], "error: no-such-command-here: cannot run it (No such file or directory)"),
])
def test_bad_input_is_one_line(argv, message):
    result, tool_pid = _run(argv)
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert _busy_processes(tool_pid) == []
