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
import subprocess
import sys

import pytest
from helpers import ROOT

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


def run_without(extra: str, tmp_path) -> tuple[int, str]:
    """pytest over tests/ with ``extra``'s packages absent, running the tests of :data:`SKIPPED_WITHOUT`:
    ``(exit status, output)``."""
    (tmp_path / "extras_blocker.py").write_text(BLOCKER.format(names=extra_packages(extra)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "pytest", "-p", "extras_blocker", "-p", "no:cacheprovider", "-q", "-rs",
               "tests", "-k", SKIPPED_WITHOUT[extra][0]]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def test_the_extras_are_the_ones_setup_py_declares():
    assert extra_packages("onnx") == ["onnx", "onnxruntime"]
    assert extra_packages("peers") == ["torch", "torchvision", "gluoncv"]


@pytest.mark.slow
@pytest.mark.parametrize("extra", sorted(SKIPPED_WITHOUT))
def test_tests_needing_an_extra_skip_without_it(extra, tmp_path):
    status, output = run_without(extra, tmp_path)
    assert "ERROR collecting" not in output and status == 0, output[-3000:]
    summary = output.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ skipped, \d+ deselected in .*", summary), summary  # none passed, failed or errored
    assert int(summary.split()[0]) >= SKIPPED_WITHOUT[extra][1], summary
    reasons = re.findall(r"^SKIPPED \[\d+\] \S+: (.*)$", output, re.MULTILINE)
    assert reasons and all(f"'.[{extra}]'" in reason for reason in reasons), reasons
