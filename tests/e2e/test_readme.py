"""README.md stays a short user's guide whose commands work.

* README.md has at most ``MAX_README_LINES`` lines.
* Every ``python <script> ...`` line of its ```bash blocks (backslash continuations joined) is parsed by
  that script's own argument parser, so each flag exists and each value parses; a ``tools/launch.py``
  line is parsed by the launcher and the command after ``--`` by its own script.
* Every ``make <target>`` it names is a target of the Makefile (``make -n <target>``), and every
  ``pip install '.[extras]'`` names extras that ``setup.py`` declares.
* README.md, symbol/README.md and docs/*.md use no wording about how the project was made.
* Every test the documentation cites (``tests/<file>.py::<name>``, or ``::<name>`` after such a file)
  exists, so a renamed or removed test cannot leave a claim without its proof.
"""
from __future__ import annotations

import ast
import functools
import re
import shlex
import shutil
import subprocess
from argparse import Namespace
from pathlib import Path

import pytest
from helpers import ROOT as REPOSITORY
from helpers import load_script

ROOT = Path(REPOSITORY)
README = ROOT / "README.md"
MAX_README_LINES = 300

# How a script exposes its argument parser: ``build_parser() -> ArgumentParser`` (parsed here with
# ``parse_args(argv)``) or ``parse_args(argv) -> Namespace`` (the script's own parse, checks included),
# found in its source. Scripts that differ are listed in SPECIAL_PARSERS: tools/launch.py's
# ``parse_args`` returns (options, command), and the command after ``--`` is parsed by its own script.
BUILD_PARSER, PARSE_ARGS, LAUNCHER = "build_parser", "parse_args", "launcher"
SPECIAL_PARSERS = {"tools/launch.py": LAUNCHER}
MAIN_SCRIPTS = ("train.py", "evaluate.py", "demo.py")
DOCS = [README, ROOT / "symbol" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# a cited test: tests/<file>.py, optionally ::name; or `::name`, a test of the file cited last
CITED_TEST = re.compile(r"(tests/[\w/]+\.py)(?:::(\w+))?|`::(\w+)")
# Wording about how the project was made, not about what it does.
HISTORY_WORDS = re.compile(r"\bsession|seed 00|the issue", re.IGNORECASE)


def bash_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, command)`` for every command line inside ```bash blocks of ``text``.

    A line ending in a backslash is joined with the next one; the number is that of the first line.
    """
    commands: list[tuple[int, str]] = []
    in_bash = False
    pending: tuple[int, str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("```"):
            in_bash = not in_bash and stripped[3:].strip() == "bash"
            pending = None
            continue
        if not in_bash:
            continue
        start, before = pending if pending else (number, "")
        joined = before + (line.strip() if pending else line.rstrip())
        if joined.endswith("\\"):
            pending = (start, joined[:-1].rstrip() + " ")
            continue
        pending = None
        if joined.strip():
            commands.append((start, joined.strip()))
    return commands


def split_command(line: str) -> list[str]:
    """Shell words of ``line`` with a trailing ``# comment`` dropped."""
    return shlex.split(line, comments=True)


def is_python(word: str) -> bool:
    return word in ("python", "python3") or word.endswith(("/python", "/python3"))


def is_pip(word: str) -> bool:
    return word in ("pip", "pip3") or word.endswith(("/pip", "/pip3"))


def readme_commands() -> list[tuple[int, str]]:
    return bash_lines(README.read_text())


def script_commands() -> list[tuple[int, str]]:
    """README commands that run ``python <script>.py``."""
    out = []
    for number, line in readme_commands():
        words = split_command(line)
        if len(words) >= 2 and is_python(words[0]) and words[1].endswith(".py"):
            out.append((number, line))
    return out


# the scripts are loaded once each: the parse test below is parametrized over every README command
cached_script = functools.cache(load_script)


def parser_kind(script: str) -> str | None:
    """How ``script`` (relative to the repository) exposes its parser; None when it exposes none."""
    if script in SPECIAL_PARSERS:
        return SPECIAL_PARSERS[script]
    path = ROOT / script
    source = path.read_text() if path.is_file() else ""
    for kind in (BUILD_PARSER, PARSE_ARGS):
        if re.search(rf"^def {kind}\(", source, re.MULTILINE):
            return kind
    return None


def parse_with_script(words: list[str], where: str) -> Namespace:
    """Parse ``words`` (``python <script> args...``) with the script's own parser; fail naming ``where``."""
    script, argv = words[1], words[2:]
    kind = parser_kind(script)
    if kind is None:
        pytest.fail(f"{where}: {script} has no build_parser() or parse_args(argv) to check its arguments with")
    module = cached_script(script)
    try:
        if kind == BUILD_PARSER:
            return module.build_parser().parse_args(argv)
        if kind == PARSE_ARGS:
            return module.parse_args(argv)
        options, command = module.parse_args(argv)
    except SystemExit as err:
        pytest.fail(f"{where}: {script} rejects its arguments (exit {err.code})")
    except Exception as err:  # the scripts' parsers raise UserError for a bad flag or value
        pytest.fail(f"{where}: {script} rejects its arguments: {err}")
    if not (len(command) >= 2 and is_python(command[0])):
        pytest.fail(f"{where}: the command after -- is not 'python <script> ...'")
    parse_with_script(command, where)
    return options


def setup_extras() -> set[str]:
    """The keys of ``extras_require`` in setup.py, read without running it."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "extras_require" and isinstance(node.value, ast.Dict):
            return {key.value for key in node.value.keys if isinstance(key, ast.Constant)}
    raise AssertionError("setup.py: no extras_require dict")


def cited_tests(text: str) -> list[tuple[str, str | None]]:
    """``(test file, test name or None)`` for every test ``text`` cites, ``::name`` resolved to the last file."""
    cited, last = [], None
    for match in CITED_TEST.finditer(text):
        path, name, short = match.groups()
        if path:
            last = path
            cited.append((path, name))
        elif last is not None:
            cited.append((last, short))
    return cited


def make_targets_named() -> list[tuple[int, str]]:
    """``(line number, target)`` for ``make <target>`` in bash blocks and in `inline code`."""
    found = [(n, word) for n, line in readme_commands() for words in [split_command(line)]
             if words and words[0] == "make" for word in words[1:] if not word.startswith("-")]
    for number, line in enumerate(README.read_text().splitlines(), start=1):
        found += [(number, target) for target in re.findall(r"`make ([\w-]+)`", line)]
    return found


# ---------------------------------------------------------------------------------------------------
def test_readme_is_a_short_guide():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; at most {MAX_README_LINES}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_wording_about_how_the_project_was_made(path):
    hits = [f"{path.name}:{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), start=1)
            if HISTORY_WORDS.search(line)]
    assert not hits, "wording about how the project was made:\n" + "\n".join(hits)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_tests_exist(path):
    missing = []
    for test_file, name in cited_tests(path.read_text()):
        source = ROOT / test_file
        if not source.is_file():
            missing.append(test_file)
        elif name and not re.search(rf"^\s*def {name}\(", source.read_text(), re.MULTILINE):
            missing.append(f"{test_file}::{name}")
    assert not missing, f"{path.relative_to(ROOT)} cites tests that do not exist: {sorted(set(missing))}"


def test_cited_tests_are_read_with_the_file_before_them():
    text = "see `tests/a.py::test_x`, `::test_y` and tests/b.py; then `::test_z`"
    assert cited_tests(text) == [("tests/a.py", "test_x"), ("tests/a.py", "test_y"), ("tests/b.py", None),
                                 ("tests/b.py", "test_z")]


def test_bash_blocks_are_read_with_continuations_joined():
    text = "x\n```bash\npython a.py --x 1 \\\n    --y '' # note\nmake test\n```\n```python\npython b.py\n```\n"
    assert bash_lines(text) == [(3, "python a.py --x 1 --y '' # note"), (5, "make test")]
    assert split_command(bash_lines(text)[0][1]) == ["python", "a.py", "--x", "1", "--y", ""]


def test_readme_runs_the_main_scripts():
    """Guards the parse test below against reading nothing (a renamed block language, a new prompt)."""
    scripts = {split_command(line)[1] for _, line in script_commands()}
    assert {"train.py", "evaluate.py", "demo.py", "tools/prepare_dataset.py"} <= scripts


@pytest.mark.parametrize("number,line", script_commands(),
                         ids=[f"README.md:{n}" for n, _ in script_commands()])
def test_readme_command_parses_with_its_script_parser(number, line):
    parse_with_script(split_command(line), f"README.md:{number}: {line}")


def test_a_wrong_flag_or_value_fails_the_parse():
    """The check above can fail: a flag the script lacks and a value of the wrong type are caught."""
    for words in (["python", "train.py", "--no-such-flag"], ["python", "train.py", "--batch-size", "four"],
                  ["python", "tools/benchmark.py", "--mode", "fly"],
                  ["python", "tools/launch.py", "-n", "2", "--", "python", "train.py", "--epoch", "x"]):
        with pytest.raises(pytest.fail.Exception, match="rejects its arguments"):
            parse_with_script(words, "test")
    with pytest.raises(pytest.fail.Exception, match="has no build_parser"):
        parse_with_script(["python", "tools/no_such_tool.py", "--x"], "test")


def test_every_script_exposes_its_parser():
    """Every command line (the three scripts and each tools/*.py with a ``__main__``) has a parser this test
    can call, so any of its commands can be checked when README.md shows one."""
    scripts = [*MAIN_SCRIPTS, *sorted(f"tools/{p.name}" for p in (ROOT / "tools").glob("*.py")
                                      if '__name__ == "__main__"' in p.read_text())]
    assert len(scripts) > len(MAIN_SCRIPTS)
    without = [script for script in scripts if parser_kind(script) is None]
    assert not without, f"no build_parser() or parse_args(argv): {without}"
    assert re.search(r"^def parse_args\(", (ROOT / "tools/launch.py").read_text(), re.MULTILINE)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_targets_in_readme_exist():
    named = make_targets_named()
    assert {"test", "quickstart"} <= {target for _, target in named}
    for number, target in named:
        done = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, f"README.md:{number}: make {target}: {done.stderr.strip()}"


def test_pip_extras_in_readme_exist():
    declared = setup_extras()
    checked = 0
    for number, line in readme_commands():
        words = split_command(line)
        if not (words and is_pip(words[0])):
            continue
        for word in words:
            match = re.fullmatch(r"\.\[([\w,-]+)\]", word)
            if match:
                unknown = set(match.group(1).split(",")) - declared
                assert not unknown, f"README.md:{number}: extras {sorted(unknown)} not in setup.py"
                checked += 1
    assert checked, "README.md shows no pip install of the project's extras"


def test_the_fast_recipe_line_is_config_recipes_fast():
    """The training section's ``# fast recipe`` command trains with ``config/recipes.py``'s ``fast`` flags and
    epochs, so the README cannot show a recipe other than the one measured in docs/benchmarks.md."""
    from config.recipes import COMMON_FLAGS, RECIPES

    lines = [split_command(line) for _, line in readme_commands() if line.rstrip().endswith("# fast recipe")]
    assert len(lines) == 1, "README.md has no (or more than one) train.py line marked '# fast recipe'"
    shown = parse_with_script(lines[0], "README.md: # fast recipe")
    # the recipe's flags after the README's: argparse keeps the last value, so any flag the line lacks or
    # gives another value makes the two parses differ
    expected = parse_with_script([*lines[0], *COMMON_FLAGS, *RECIPES["fast"].train_flags()], "config/recipes.py")
    assert vars(shown) == vars(expected)
