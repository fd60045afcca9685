"""The suite with ``pip install -e '.[cpu,test]'`` alone: without an optional extra (setup.py's ``peers``:
torch, torchvision, gluoncv; ``onnx``: onnx, onnxruntime) every test module still collects, and the tests
that need the extra are skipped with a reason that names it.

Each check runs pytest in a subprocess with a small plugin that makes the extra's packages absent:
``sys.modules[name] = None``, so ``import name`` raises ModuleNotFoundError and
``importlib.util.find_spec(name)`` returns None, as for a package that is not installed. The subprocess
collects the whole of tests/ (a module that imports the extra unguarded is a collection error) and runs
a handful of the tests that use the extra.
"""
from __future__ import annotations

import ast
import os
import re
import sys

import pytest
from helpers import ROOT, run_side_by_side

# per extra: the tests run without it (a -k expression) and how many of them there are at least
SKIPPED_WITHOUT = {
    "onnx": ("test_decoding_and_nms_match_multibox_detection or (test_flags and onnx)", 5),
    "peers": ("test_gluoncv_equals_its_own_forward", 2),
}

BLOCKER = '''"""pytest plugin: these packages behave as if they were not installed."""
import sys

for name in {names!r}:
    sys.modules[name] = None
'''


def extra_packages(extra: str) -> list[str]:
    """The import names of setup.py's ``extras_require[extra]`` (read without running setup.py; for
    these packages the distribution name is the import name)."""
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "extras_require" and isinstance(node.value, ast.Dict):
            extras = {key.value: value for key, value in zip(node.value.keys, node.value.values)}
            requirements = [element.value for element in extras[extra].elts]
            return [re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower().replace("-", "_") for req in requirements]
    raise AssertionError("setup.py: no extras_require")


@pytest.fixture(scope="module")
def without_extra(tmp_path_factory) -> dict[str, tuple[int, str]]:
    """Per extra of :data:`SKIPPED_WITHOUT`: pytest over tests/ with the extra's packages absent, running
    the tests listed there, ``(exit status, output)``; the extras side by side."""
    commands, envs = {}, {}
    for extra, (selection, _) in SKIPPED_WITHOUT.items():
        folder = tmp_path_factory.mktemp(f"without_{extra}")
        (folder / "extras_blocker.py").write_text(BLOCKER.format(names=extra_packages(extra)))
        envs[extra] = dict(os.environ,
                           PYTHONPATH=os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
        commands[extra] = [sys.executable, "-m", "pytest", "-p", "extras_blocker", "-p", "no:cacheprovider", "-q",
                           "-rs", "tests", "-k", selection]
    runs = run_side_by_side(commands, cwd=ROOT, workers=2, timeout=600, envs=envs)
    return {extra: (proc.returncode, proc.stdout + proc.stderr) for extra, proc in runs.items()}


def test_the_extras_are_the_ones_setup_py_declares():
    assert extra_packages("onnx") == ["onnx", "onnxruntime"]
    assert extra_packages("peers") == ["torch", "torchvision", "gluoncv"]


@pytest.mark.slow
@pytest.mark.parametrize("extra", sorted(SKIPPED_WITHOUT))
def test_tests_needing_an_extra_skip_without_it(extra, without_extra):
    status, output = without_extra[extra]
    assert "ERROR collecting" not in output and status == 0, output[-3000:]
    summary = output.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ skipped, \d+ deselected in .*", summary), summary  # none passed, failed or errored
    assert int(summary.split()[0]) >= SKIPPED_WITHOUT[extra][1], summary
    reasons = re.findall(r"^SKIPPED \[\d+\] \S+: (.*)$", output, re.MULTILINE)
    assert reasons and all(f"'.[{extra}]'" in reason for reason in reasons), reasons
