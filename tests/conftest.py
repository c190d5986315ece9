"""Fixtures shared by the test files (their helpers are in tests/support/).

What loads a model or compiles a policy is session-scoped: each distinct thing
is built once a run. A session-scoped object is shared by every test that asks
for it, so a test that changes one (its grade cache, its weights) or counts its
running totals from zero asks for its own (`fresh_grader`, `safety_dir`)."""
from __future__ import annotations

import pytest

from rbrlang.cli import main
from tests.support.files import SAFETY, write
from tests.support.policies import MINIMAL, copy_safety


@pytest.fixture
def rbrc(capsys):
    """Run `rbrc ARGS…` in-process; returns (exit code, stdout, stderr)."""
    def run(*args):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


# --- policies -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def safety():
    """compiled/safety, loaded: a CompiledPolicy (frozen: one serves every test)."""
    from rbrlang.policy import load_policy

    return load_policy(SAFETY)


@pytest.fixture
def safety_dir(tmp_path):
    """A private copy of the compiled/safety folder, for tests that write into it
    (weights.json, calibration.json) or edit it; never the repository's own."""
    return copy_safety(tmp_path / "safety")


@pytest.fixture(scope="session")
def minimal_dir(tmp_path_factory):
    """MINIMAL compiled by `rbrc compile` into a folder (two graded propositions: cheap to grade)."""
    folder = tmp_path_factory.mktemp("minimal")
    assert main(["compile", str(write(folder / "p.rbr", MINIMAL)), "-o", str(folder / "compiled")]) == 0
    return folder / "compiled"


@pytest.fixture(scope="session")
def minimal(minimal_dir):
    """MINIMAL as a loaded CompiledPolicy."""
    from rbrlang.policy import load_policy

    return load_policy(minimal_dir)


# --- the tiny grader ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, safety):
    """A tiny Llama grader with a locally trained tokenizer, built once. The
    tokenizer also learns the safety policy's templates, so its prompts are short."""
    from rbrlang.runtime.tiny import build_tiny_grader
    templates = sorted({p.template for p in safety.propositions if p.graded})
    return build_tiny_grader(tmp_path_factory.mktemp("tiny") / "grader", seed=0, corpus=templates)


@pytest.fixture(scope="session")
def fresh_grader(tiny_model_dir):
    """`fresh_grader(**kwargs)`: a new HFGrader on the tiny model (`from_pretrained`'s
    arguments; the CPU unless `device` says otherwise), loaded for this call alone:
    for a test that changes its grader or reads its running totals."""
    from rbrlang.runtime import HFGrader

    def load(**kwargs):
        return HFGrader.from_pretrained(str(tiny_model_dir), **{"device": "cpu", **kwargs})
    return load


@pytest.fixture(scope="session")
def tiny_grader(fresh_grader):
    """`tiny_grader(**kwargs)`: the session's HFGrader on the tiny model for those
    arguments, loaded the first time they are asked for. Arguments that resolve
    alike (`device="auto"` on a machine without CUDA is the CPU) share one grader.
    Its prefix key/values and running totals carry over between tests: read
    totals as differences, or use `fresh_grader`."""
    from rbrlang.runtime.base import device_and_dtype

    loaded = {}

    def shared(**kwargs):
        kwargs["device"], kwargs["dtype"] = device_and_dtype(kwargs.get("device", "cpu"), kwargs.get("dtype", "auto"))
        key = tuple(sorted(kwargs.items()))
        if key not in loaded:
            loaded[key] = fresh_grader(**kwargs)
        return loaded[key]
    return shared


@pytest.fixture(scope="session")
def grader(tiny_grader):
    """The tiny grader most tests share: the CPU, float32, the chat template, no cache."""
    return tiny_grader()


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch thread for a module's tests, put back after: two threads on a CPU
    shared with other jobs spin against each other (30x slower here)."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
