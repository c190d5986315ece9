"""README as a contract: CI runs its test command, and its quickstart works as
written against a non-editable install in a fresh virtual environment."""
from __future__ import annotations

import os
import re
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.support.files import ROOT

README = (ROOT / "README.md").read_text()


def indented_blocks(text: str) -> list[str]:
    """Shell commands in README are 4-space indented blocks."""
    return [m.group(0) for m in re.finditer(r"(?:^    \S.*\n)+", text, re.M)]


def fenced(lang: str) -> list[str]:
    """Fenced blocks of one language ("" for plain), read fence by fence."""
    blocks, current, current_lang = [], None, None
    for line in README.splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current, current_lang = [], line[3:].strip()
            else:
                if current_lang == lang:
                    blocks.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_ci_runs_the_readme_test_command():
    install, test = (b.strip() for b in indented_blocks(README)[:2])
    assert install.startswith("pip install torch==2.13.0")
    ci = (ROOT / ".ci/run").read_text()
    assert test in ci.splitlines()
    assert "pip install --quiet torch==2.13.0" in ci


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    """The project built as a wheel and installed (no-deps) into a new venv.

    The dependencies come from the interpreter running the tests, through a
    `.pth` file naming its site-packages: a venv that inherits system site packages would
    show the *base* interpreter's packages instead, which on a clean machine
    (CI's venv made from the system python) have none of them."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp, ROOT],
                   check=True, capture_output=True)
    (wheel,) = tmp.glob("rbrlang-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "rbrlang/grammar/rbr.lark" in names and "rbrlang/grammar/rbrtest.lark" in names
    assert zipfile.ZipFile(wheel).read("rbrlang/grammar/rbr.lark") == (ROOT / "grammar/rbr.lark").read_bytes()
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
    # Appended after the new venv's own site-packages, so the wheel installed there wins.
    (Path(purelib) / "zz_test_deps.pth").write_text("\n".join(ours) + "\n")
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", wheel], check=True, capture_output=True)
    return env_dir


def test_quickstart_as_written(fresh_venv, tmp_path):
    bin_dir = fresh_venv / "bin"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    where = subprocess.run([bin_dir / "python", "-c", "import rbrlang; print(rbrlang.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert str(fresh_venv) in where  # the wheel, not this checkout

    (policy_text,) = fenced("rbr")
    (tmp_path / "refusals.rbr").write_text(policy_text)
    commands = next(b for b in indented_blocks(README) if "rbrc check refusals.rbr" in b)
    for line in commands.strip().splitlines():
        proc = subprocess.run(line.strip(), shell=True, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, (line, proc.stderr)
    assert (tmp_path / "compiled/refusals/policy.json").is_file()
    assert (tmp_path / "refusals.rbr").read_text() == policy_text  # already canonical

    python_block = next(b for b in fenced("python") if "load_policy" in b)
    check = python_block + "\nassert policy.classify('hard_refuse', {'apology': True, 'refuses': True, 'empty': False}) == 'ideal'\n"
    proc = subprocess.run([bin_dir / "python", "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

    # The diagnostic shown in README is what rbrc prints for that mistake.
    (shown,) = [b for b in fenced("") if "error[E0102]" in b]
    (tmp_path / "refusals.rbr").write_text(policy_text.replace("refuses and apology and", "refuses and apolgy and"))
    proc = subprocess.run(["rbrc", "check", "refusals.rbr"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.startswith(shown), proc.stderr


def test_data_commands_as_written(fresh_venv, tmp_path):
    """README's classify / tiny-grader / grade block, on its own example files;
    the grade cache lands where README says, never in the working folder."""
    import json

    bin_dir = fresh_venv / "bin"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    env.pop("PYTHONPATH", None)
    env.pop("RBRLANG_CACHE", None)
    work = tmp_path / "work"
    work.mkdir()
    (policy_text,) = fenced("rbr")
    (work / "refusals.rbr").write_text(policy_text)
    named = {info.split()[1]: text for info, text in fenced_with_info() if info.startswith("jsonl ")}
    assert set(named) == {"labels.jsonl", "completions.jsonl"}
    for name, text in named.items():
        (work / name).write_text(text)
    quickstart = next(b for b in indented_blocks(README) if "rbrc check refusals.rbr" in b)
    compile_line = next(line for line in quickstart.splitlines() if "rbrc compile" in line)
    block = next(b for b in indented_blocks(README) if "rbrc tiny-grader" in b)
    outputs = {}
    for line in [compile_line, *block.strip().splitlines()]:
        proc = subprocess.run(line.strip(), shell=True, cwd=work, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, (line, proc.stderr)
        assert "Traceback" not in proc.stderr
        outputs[line.split()[1]] = proc.stdout
    classified = [json.loads(x) for x in outputs["classify"].splitlines()]
    assert [c["line"] for c in classified] == [1, 2] and classified[0]["class"] == "ideal"
    assert set(classified[0]) == {"class", "classes", "response_type", "line"}  # as README shows
    graded = [json.loads(x) for x in (work / "graded.jsonl").read_text().splitlines()]
    assert len(graded) == len(named["completions.jsonl"].splitlines())
    assert {"propositions", "answer_mass", "features", "classes", "schema_hash"} <= set(graded[0])
    assert list(graded[0]["propositions"]) == ["apology", "refuses", "empty"]  # README's column order
    assert (tmp_path / "xdg/rbrlang/grades.sqlite").is_file() and not (work / ".rbrlang").exists()


def fenced_with_info() -> list[tuple[str, str]]:
    """(info string, text) of every fenced block."""
    blocks, current, info = [], None, ""
    for line in README.splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current, info = [], line[3:].strip()
            else:
                blocks.append((info, "".join(current)))
                current = None
        elif current is not None:
            current.append(line)
    return blocks
