"""Nothing a user has is lost: every `-o` and every rewrite replaces only what
rbrc provably wrote, writes whole or not at all, leaves nothing behind on
failure, gives new files and folders the umask's modes, and reports a path it
cannot use in one line (exit 1), never a traceback."""
from __future__ import annotations

import json
import os
import stat
import warnings
from pathlib import Path

import pytest

from tests.support.files import SHARED, write
from tests.support.policies import MINIMAL

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0
needs_non_root = pytest.mark.skipif(ROOT_USER, reason="root writes into read-only folders")
UNWRITABLE = Path("/proc/rbrlang-no-such-place")  # cannot be created, whoever runs the tests
needs_proc = pytest.mark.skipif(not os.path.ismount("/proc"), reason="needs Linux /proc")


def one_line_error(command: str, err: str) -> str:
    """The whole of stderr is one `rbrc CMD: error: …` line."""
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"rbrc {command}: error: "), err
    return lines[0]


def snapshot(folder: Path) -> dict:
    """Every path under a folder with its bytes (None for folders)."""
    return {p.relative_to(folder).as_posix(): (None if p.is_dir() else p.read_bytes())
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A working folder holding a policy, as a user's repository would."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "p.rbr", MINIMAL)
    return tmp_path


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


# --- rbrc compile -o ------------------------------------------------------------------

def test_compile_refuses_the_source_file(work, rbrc):
    before = snapshot(work)
    code, _, err = rbrc("compile", "p.rbr", "-o", "p.rbr")
    assert code == 1 and "p.rbr: is the policy's source" in one_line_error("compile", err)
    assert snapshot(work) == before


def test_compile_refuses_a_folder_of_sources(work, rbrc):
    write(work / "shared/vocab.rbr", 'rbr 1\n\nproposition c {\n  question "Is c?"\n}\n')
    write(work / "q.rbr", 'rbr 1\n\nimport "shared/vocab.rbr"\n' + MINIMAL.split("\n", 1)[1]
          .replace("good = a and b", "good = a and b and c").replace("ok   = a and not b", "ok   = a and not (b and c)"))
    before = snapshot(work)
    code, _, err = rbrc("compile", "q.rbr", "-o", "shared")
    assert code == 1 and "shared: holds vocab.rbr, the policy's source" in one_line_error("compile", err)
    assert snapshot(work) == before


@pytest.mark.parametrize("name", ["notes.txt", "data"])
def test_compile_refuses_any_other_file_or_folder(work, rbrc, name):
    write(work / "notes.txt", "my notes\n")
    write(work / "data/rows.jsonl", "{}\n")
    before = snapshot(work)
    code, _, err = rbrc("compile", "p.rbr", "-o", name)
    line = one_line_error("compile", err)
    assert code == 1 and line.startswith(f"rbrc compile: error: {name}: is a ")
    assert "-o replaces only a missing path, an empty folder or a compiled policy folder" in line
    assert snapshot(work) == before


def test_compile_refuses_the_working_folder_and_leaves_nothing(work, rbrc):
    (work / "sub").mkdir()
    os.chdir(work / "sub")
    hidden = {p for p in os.listdir(work.parent) if p.startswith(".")}
    for out in (".", "..", str(work)):
        before = snapshot(work)
        code, _, err = rbrc("compile", work / "p.rbr", "-o", out)
        assert code == 1 and "working folder" in one_line_error("compile", err), out
        assert snapshot(work) == before  # no `..old.*` folders
    assert {p for p in os.listdir(work.parent) if p.startswith(".")} == hidden


def test_compile_refuses_the_working_folder_even_if_compiled(work, rbrc):
    assert rbrc("compile", "p.rbr", "-o", "out")[0] == 0
    os.chdir(work / "out")
    code, _, err = rbrc("compile", work / "p.rbr", "-o", ".")
    assert code == 1 and "is the working folder" in one_line_error("compile", err)
    assert sorted(os.listdir(work)) == ["out", "p.rbr"]


@needs_proc
def test_compile_refuses_a_mount_point(work, rbrc):
    code, _, err = rbrc("compile", "p.rbr", "-o", "/proc")
    assert code == 1 and "/proc: is a mount point" in one_line_error("compile", err)
    assert sorted(os.listdir(work)) == ["p.rbr"]


def test_compile_replaces_empty_and_compiled_folders_and_keeps_fitted_files(work, rbrc):
    (work / "empty").mkdir()
    assert rbrc("compile", "p.rbr", "-o", "empty")[0] == 0
    assert (work / "empty/policy.json").is_file()
    write(work / "empty/weights.json", '{"fitted": true}\n')
    write(work / "empty/templates/gone.jinja", "a template of a removed proposition\n")
    assert rbrc("compile", "p.rbr", "-o", "empty")[0] == 0
    assert (work / "empty/weights.json").read_text() == '{"fitted": true}\n'
    assert not (work / "empty/templates/gone.jinja").exists()
    assert sorted(os.listdir(work)) == ["empty", "p.rbr"]  # no .empty.old.* or .empty.new.*


def test_compile_refuses_a_compiled_folder_holding_other_files(work, rbrc):
    assert rbrc("compile", "p.rbr", "-o", "out")[0] == 0
    write(work / "out/NOTES.md", "why we changed the policy\n")
    before = snapshot(work)
    code, _, err = rbrc("compile", "p.rbr", "-o", "out")
    assert code == 1 and "out: is a folder with other files in it" in one_line_error("compile", err)
    assert snapshot(work) == before


def test_compile_through_a_symbolic_link_keeps_the_link(work, rbrc):
    assert rbrc("compile", "p.rbr", "-o", "real")[0] == 0
    (work / "link").symlink_to("real")
    write(work / "p.rbr", MINIMAL.replace('"Is a?"', '"Is a, really?"'))
    assert rbrc("compile", "p.rbr", "-o", "link")[0] == 0
    assert (work / "link").is_symlink() and "really" in (work / "real/templates/a.jinja").read_text()


def test_compiled_folder_follows_the_umask(work, rbrc, umask_027):
    assert rbrc("compile", "p.rbr", "-o", "deep/out")[0] == 0
    for path in (work / "deep", work / "deep/out", work / "deep/out/templates"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o750, path
    for path in (work / "deep/out/policy.json", work / "deep/out/templates/a.jinja"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


@needs_proc
def test_compile_to_a_place_that_cannot_be_written(work, rbrc):
    code, _, err = rbrc("compile", "p.rbr", "-o", UNWRITABLE / "out")
    assert code == 1 and "cannot write" in one_line_error("compile", err)
    write(work / "notes.txt", "x\n")
    code, _, err = rbrc("compile", "p.rbr", "-o", "notes.txt/out")
    assert code == 1 and "notes.txt/out: cannot write: notes.txt is a file, not a folder" in one_line_error("compile", err)
    assert sorted(os.listdir(work)) == ["notes.txt", "p.rbr"]


@needs_non_root
def test_compile_into_a_read_only_folder(work, rbrc):
    (work / "ro").mkdir(mode=0o555)
    try:
        code, _, err = rbrc("compile", "p.rbr", "-o", "ro/out")
        assert code == 1 and "ro/out: cannot write: permission denied" in one_line_error("compile", err)
    finally:
        (work / "ro").chmod(0o755)
    assert os.listdir(work / "ro") == []


def test_a_failed_swap_leaves_the_old_output_and_nothing_else(work, rbrc):
    from rbrlang.compiler.codegen import write_output
    from rbrlang.errors import PathError

    assert rbrc("compile", "p.rbr", "-o", "out")[0] == 0
    before = snapshot(work)
    broken = {"policy.json": b"{}", "templates": b"a file where a folder must go", "templates/a.jinja": b"x"}
    with pytest.raises(PathError, match="out: cannot write"):
        write_output(broken, work / "out")
    assert snapshot(work) == before


# --- rbrc fmt ---------------------------------------------------------------------------

def test_fmt_writes_atomically_and_keeps_the_mode(work, rbrc):
    path = write(work / "messy.rbr", MINIMAL.replace("proposition a {", "proposition   a   {"))
    path.chmod(0o640)
    code, _, err = rbrc("fmt", "messy.rbr")
    assert code == 0 and "formatted messy.rbr" in err
    assert path.read_text() == MINIMAL and stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(os.listdir(work)) == ["messy.rbr", "p.rbr"]


@needs_non_root
def test_fmt_of_a_read_only_file_is_one_line(work, rbrc):
    messy = MINIMAL.replace("proposition a {", "proposition   a   {")
    locked, open_ = write(work / "ro/locked.rbr", messy), write(work / "ro/open.rbr", messy)
    locked.chmod(0o444)
    (work / "ro").chmod(0o555)
    try:
        code, _, err = rbrc("fmt", locked)
        assert code == 1 and "locked.rbr: cannot write: permission denied" in one_line_error("fmt", err)
        code, _, err = rbrc("fmt", locked, open_)  # one file failing does not stop the others
        assert code == 1 and "locked.rbr: cannot write" in err and "formatted" in err and "Traceback" not in err
    finally:
        (work / "ro").chmod(0o755)
    assert locked.read_text() == messy and open_.read_text() == MINIMAL
    assert sorted(os.listdir(work / "ro")) == ["locked.rbr", "open.rbr"]


# --- rbrc import-yaml -o ----------------------------------------------------------------

def test_import_yaml_never_overwrites_another_file(work, rbrc):
    yaml = SHARED / "proposition_prompts.yaml"
    if not yaml.is_file():
        pytest.skip("needs the shared YAML policy")
    before = snapshot(work)
    code, _, err = rbrc("import-yaml", yaml, "-o", "p.rbr")
    assert code == 1 and "p.rbr: exists with other text" in one_line_error("import-yaml", err)
    assert snapshot(work) == before
    code, _, err = rbrc("import-yaml", yaml, "-o", "new/imported.rbr")
    assert code == 0, err
    again = rbrc("import-yaml", yaml, "-o", "new/imported.rbr")  # the same text: nothing is lost
    assert again[0] == 0
    write(work / "notes.txt", "x\n")
    code, _, err = rbrc("import-yaml", yaml, "-o", "notes.txt/x.rbr")
    assert code == 1 and "notes.txt/x.rbr: cannot write: notes.txt is a file, not a folder" in \
        one_line_error("import-yaml", err)
    assert sorted(os.listdir(work)) == ["new", "notes.txt", "p.rbr"]
    assert os.listdir(work / "new") == ["imported.rbr"]


# --- rbrc grade: output, input and cache checked before the model loads ----------------

@pytest.fixture
def graded(work, rbrc):
    """A compiled MINIMAL policy and a two-line data file."""
    assert rbrc("compile", "p.rbr", "-o", "compiled")[0] == 0
    rows = [{"prompt": [{"role": "user", "content": "hi"}], "completion": "Hello!", "category": "C-R"},
            {"prompt": [{"role": "user", "content": "bye"}], "completion": [{"role": "assistant", "content": "Bye."}],
             "response_type": "r"}]
    write(work / "in.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    (work / "not-a-model").mkdir()
    return work


def grade(rbrc, *args, grader="not-a-model"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return rbrc("grade", "compiled", "--data", "in.jsonl", "--grader", grader, *args)


@needs_proc
def test_grade_output_that_cannot_be_written_fails_before_the_model(graded, rbrc):
    code, _, err = grade(rbrc, "-o", UNWRITABLE / "out.jsonl")  # the grader is no model: never reached
    assert code == 1 and "out.jsonl: cannot write" in one_line_error("grade", err)
    assert "grader" not in err


def test_grade_refuses_outputs_that_are_not_its_own(graded, rbrc):
    write(graded / "notes.txt", "my notes\n")
    before = snapshot(graded)
    for out, says in (("notes.txt", "exists and is not an earlier `rbrc grade` output"),
                      ("in.jsonl", "is an input of this command"),
                      ("compiled", "is a folder"),
                      ("p.rbr", "exists and is not an earlier `rbrc grade` output")):
        code, _, err = grade(rbrc, "-o", out)
        assert code == 1 and f"{out}: {says}" in one_line_error("grade", err), out
    assert snapshot(graded) == before


def test_grade_reports_every_bad_line_before_the_model(graded, rbrc):
    with open(graded / "in.jsonl", "a") as fh:
        fh.write('{"prompt": 3}\nnot json\n')
    (graded / "in.jsonl").write_bytes((graded / "in.jsonl").read_bytes() + b'{"completion": "caf\xe9"}\n')
    code, _, err = grade(rbrc, "-o", "out.jsonl")
    assert code == 1 and "Traceback" not in err and "cannot load grader" not in err
    assert "in.jsonl:3:2: error[E0301]" in err and "in.jsonl:4:1: error[E0300]" in err
    assert "in.jsonl:5:20: error[E0300]: not UTF-8 text" in err
    assert "3 bad lines in in.jsonl; nothing graded" in err
    assert sorted(os.listdir(graded)) == ["compiled", "in.jsonl", "not-a-model", "p.rbr"]


def test_grade_cache_location(tmp_path):
    from rbrlang.runtime.cache import default_cache_path

    assert default_cache_path({"RBRLANG_CACHE": "/x/c.sqlite", "XDG_CACHE_HOME": "/y"}) == Path("/x/c.sqlite")
    assert default_cache_path({"XDG_CACHE_HOME": "/y"}) == Path("/y/rbrlang/grades.sqlite")
    assert default_cache_path({}) == Path.home() / ".cache/rbrlang/grades.sqlite"


def test_grade_cache_under_xdg_and_never_in_the_working_folder(graded, rbrc, tiny_model_dir, monkeypatch):
    monkeypatch.delenv("RBRLANG_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(graded / "xdg"))
    code, _, err = grade(rbrc, "-o", "out.jsonl", grader=tiny_model_dir)
    assert code == 0 and "graded 2 lines" in err, err
    assert (graded / "xdg/rbrlang/grades.sqlite").is_file()
    assert not (graded / ".rbrlang").exists()
    rows = [json.loads(x) for x in (graded / "out.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2] and list(rows[0]["propositions"]) == ["a", "b"]

    monkeypatch.setenv("RBRLANG_CACHE", str(graded / "env.sqlite"))
    assert grade(rbrc, "-o", "out.jsonl", grader=tiny_model_dir)[0] == 0  # replaces its own output
    assert (graded / "env.sqlite").is_file()
    assert grade(rbrc, "-o", "out.jsonl", "--cache", "flag.sqlite", grader=tiny_model_dir)[0] == 0
    assert (graded / "flag.sqlite").is_file()
    monkeypatch.setenv("RBRLANG_CACHE", str(graded / "none.sqlite"))
    assert grade(rbrc, "-o", "out.jsonl", "--no-cache", grader=tiny_model_dir)[0] == 0
    assert not (graded / "none.sqlite").exists()


def test_grade_cache_that_cannot_be_created_names_the_cache(graded, rbrc, tiny_model_dir, monkeypatch):
    write(graded / "notes.txt", "x\n")
    code, _, err = grade(rbrc, "-o", "out.jsonl", "--cache", "notes.txt/c.sqlite", grader=tiny_model_dir)
    line = one_line_error("grade", err)
    assert code == 1 and "notes.txt/c.sqlite: cannot create the grade cache" in line
    assert "load grader" not in line and not (graded / "out.jsonl").exists()
    # The default place failing is a warning: grading goes on without a cache.
    monkeypatch.delenv("RBRLANG_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(graded / "notes.txt"))
    code, _, err = grade(rbrc, "-o", "out.jsonl", grader=tiny_model_dir)
    assert code == 0 and "warning: " + str(graded / "notes.txt/rbrlang/grades.sqlite") in err
    assert "graded 2 lines" in err


def test_grade_failing_mid_run_leaves_no_partial_file(graded, rbrc, tiny_model_dir):
    row = {"prompt": [{"role": "user", "content": "tell me a story " * 3000}], "completion": "x", "category": "C-R"}
    write(graded / "in.jsonl", json.dumps(row) + "\n")  # longer than the tiny grader's context
    code, _, err = grade(rbrc, "-o", "out/graded.jsonl", "--no-cache", grader=tiny_model_dir)
    # Found once the grader is loaded, before any forward pass (issue 14 D5): located at the line.
    assert code == 1 and "Traceback" not in err and "in.jsonl:1:2: error[E0311]" in err
    assert sorted(os.listdir(graded)) == ["compiled", "in.jsonl", "not-a-model", "p.rbr"]


def test_sigterm_mid_grade_exits_143_and_leaves_no_partial_file(graded, rbrc, tiny_model_dir, monkeypatch):
    """SIGTERM (a scheduler's stop, `kill`) undoes a half-done write as Ctrl-C does, and the
    exit code is 143, as documented (Python's default would end the process at once and
    leave `.out.jsonl.partial.*` behind). The signal is real, sent mid-write."""
    import signal

    from rbrlang.data import grade as grading

    real = grading.write_grades

    def write_then_terminated(policy, grader, items, fh, **options):
        real(policy, grader, items[:1], fh, **options)  # a line is in the temporary file
        signal.raise_signal(signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr(grading, "write_grades", write_then_terminated)
    code, _, err = grade(rbrc, "-o", "out.jsonl", "--no-cache", grader=tiny_model_dir)
    assert code == 143 and "Traceback" not in err, err
    assert sorted(os.listdir(graded)) == ["compiled", "in.jsonl", "not-a-model", "p.rbr"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is rbrc's only while it runs


# --- rbrc tiny-grader -------------------------------------------------------------------

def test_tiny_grader_writes_a_model_and_refuses_other_folders(work, rbrc, umask_027):
    code, _, err = rbrc("tiny-grader", "models/tiny", "--seed", "1")
    assert code == 0 and "rbrc grade" in err
    folder = work / "models/tiny"
    assert {"config.json", "tokenizer.json", "model.safetensors", "rbrlang_tiny.json"} <= set(os.listdir(folder))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    assert stat.S_IMODE((folder / "model.safetensors").stat().st_mode) == 0o640
    weights = (folder / "model.safetensors").read_bytes()
    assert rbrc("tiny-grader", "models/tiny", "--seed", "2")[0] == 0  # an earlier tiny grader is ours
    assert (folder / "model.safetensors").read_bytes() != weights
    assert sorted(os.listdir(work / "models")) == ["tiny"]

    write(work / "mine/notes.txt", "x\n")
    before = snapshot(work / "mine")
    code, _, err = rbrc("tiny-grader", "mine")
    assert code == 1 and "mine: is a folder with other files in it" in one_line_error("tiny-grader", err)
    assert snapshot(work / "mine") == before

    from transformers import AutoModelForCausalLM, AutoTokenizer
    assert AutoModelForCausalLM.from_pretrained(folder).config.num_hidden_layers == 2
    assert AutoTokenizer.from_pretrained(folder).chat_template


def test_grade_file_library_keeps_the_same_rules(graded, grader):
    from rbrlang.data.grade import grade_file
    from rbrlang.errors import PathError
    from rbrlang.policy import load_policy

    policy = load_policy(graded / "compiled")
    write(graded / "notes.txt", "mine\n")
    with pytest.raises(PathError, match="notes.txt: exists and is not an earlier `rbrc grade` output"):
        grade_file(policy, grader, graded / "in.jsonl", graded / "notes.txt", progress=False)
    assert (graded / "notes.txt").read_text() == "mine\n"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        written, bad = grade_file(policy, grader, graded / "in.jsonl", graded / "out.jsonl", progress=False)
        assert (written, bad) == (2, [])
        assert grade_file(policy, grader, graded / "in.jsonl", graded / "out.jsonl", progress=False)[0] == 2
    assert sorted(os.listdir(graded)) == ["compiled", "in.jsonl", "not-a-model", "notes.txt", "out.jsonl", "p.rbr"]


# --- weights.json and calibration.json: files.py's one atomic writer --------------------------------------------

def _calibration(policy, coef: float):
    from rbrlang.policy.calibration import Calibration, PlattMap, template_hash

    return Calibration(policy.name, {n: PlattMap(n, template_hash(policy, n), coef, 0.0) for n in ("a", "b")})


def test_fitted_files_follow_the_umask_and_leave_nothing_behind(graded, umask_027):
    from rbrlang.policy import load_policy
    from rbrlang.policy.calibration import write_calibration
    from rbrlang.policy.weights import FittedWeights, write_weights

    folder = graded / "compiled"
    policy = load_policy(folder)
    rt = policy.response_type("r")
    write_weights(folder, policy, [FittedWeights("r", rt.schema_hash, rt.features, (0.0,) * len(rt.features),
                                                 0.0, 1.0, 0.01, "")])
    write_calibration(folder, _calibration(policy, 2.0))
    for name in ("weights.json", "calibration.json"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o640, name
    assert sorted(os.listdir(folder)) == ["calibration.json", "policy.json", "templates", "weights.json"]
    assert load_policy(folder).calibration.maps["a"].coef == 2.0


def test_concurrent_calibration_writers_never_share_a_temporary(graded):
    """Writers in one process once shared one temporary name: one truncated another's file
    or renamed it away under it. Each now writes its own, so the file is always one of them, whole."""
    import threading

    from rbrlang.policy import load_policy
    from rbrlang.policy.calibration import read_calibration, write_calibration

    folder = graded / "compiled"
    policy = load_policy(folder)
    calibrations = [_calibration(policy, 1.0 + k) for k in range(8)]
    for _ in range(5):
        start, failures = threading.Barrier(len(calibrations)), []

        def write(cal):
            start.wait()
            try:
                write_calibration(folder, cal)
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                failures.append(exc)

        threads = [threading.Thread(target=write, args=(c,)) for c in calibrations]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []
        assert read_calibration(folder, policy).maps["a"].coef in {c.maps["a"].coef for c in calibrations}
    assert sorted(os.listdir(folder)) == ["calibration.json", "policy.json", "templates"]


def test_a_fitted_file_that_cannot_be_replaced_is_one_path_error(graded):
    from rbrlang.errors import PathError
    from rbrlang.policy import load_policy
    from rbrlang.policy.calibration import write_calibration

    folder = graded / "compiled"
    policy = load_policy(folder)
    (folder / "calibration.json").mkdir()  # something that is not a file stands in the way
    with pytest.raises(PathError, match="calibration.json: cannot write"):
        write_calibration(folder, _calibration(policy, 2.0))
    assert sorted(os.listdir(folder)) == ["calibration.json", "policy.json", "templates"]
    assert os.listdir(folder / "calibration.json") == []


def test_a_killed_writers_temporary_is_swept_by_the_next_write(tmp_path):
    """Issue 14 D8: `.OUT.partial.PID.HEX` left by a killed run goes at the next write of OUT;
    a running writer's temporary and anything else of the user's stay."""
    import subprocess
    import sys

    from rbrlang.files import AtomicFile

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()  # a pid whose process has ended
    left = write(tmp_path / f".out.jsonl.partial.{dead}.0badf00d", "half a run\n")
    live = write(tmp_path / f".out.jsonl.partial.{os.getpid()}.00c0ffee", "a writer at work\n")
    mine = write(tmp_path / ".out.jsonl.partial.notes", "the user's\n")
    other = write(tmp_path / f".other.jsonl.partial.{dead}.0badf00d", "another output's\n")
    out = AtomicFile(tmp_path / "out.jsonl")
    out.write("{}\n")
    out.commit()
    assert not left.exists() and live.exists() and mine.exists() and other.exists()
    assert (tmp_path / "out.jsonl").read_text() == "{}\n"
