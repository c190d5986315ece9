"""cpu_kernels.py: the linear layers' route is chosen by an exactness probe,
applies only inside the model's forward, and grades as the stock path does
(issue 15 item 2). The speed is measured in bench/kernels.py, not here."""
from __future__ import annotations

import pickle

import pytest

torch = pytest.importorskip("torch")

from rbrlang.runtime import cpu_kernels  # noqa: E402
from rbrlang.runtime.cpu_kernels import TOLERANCE, prepare, probe  # noqa: E402

from tests.support.files import gold_rows  # noqa: E402

pytestmark = [pytest.mark.usefixtures("torch_one_thread"),
              pytest.mark.filterwarnings("ignore::rbrlang.runtime.GraderWarning")]


def settings():
    """Every precision setting a grader could touch, as the user's code reads them."""
    return (torch.get_float32_matmul_precision(), torch.backends.mkldnn.matmul.fp32_precision,
            torch.backends.mkldnn.fp32_precision, torch.backends.fp32_precision)


@pytest.fixture
def user_precision():
    """A user who asked torch for fast fp32 products ("medium": bf16 allowed), put back after."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    yield settings()
    torch.set_float32_matmul_precision(before)


@pytest.fixture(scope="module")
def items():
    rows = gold_rows(2)
    return [r["prompt"] for r in rows], [r["completion"][0]["content"] for r in rows]


def test_the_probe_passes_an_fp32_route_and_catches_a_lossy_one():
    # MKL pinned to fp32 ("ieee") is exact against float64 at the grader's shapes...
    for k, n, rows in ((576, 192, 23), (256, 1024, 1)):
        assert probe(k, n, rows, setting="ieee") <= TOLERANCE
    # ...and the same product judged against a bf16 reference is not: the comparison
    # really separates fp32 from bf16 rounding (~1e-3), whichever CPU runs it.
    assert probe(576, 192, 23, setting="ieee", reference=torch.bfloat16) > 100 * TOLERANCE


def test_an_inexact_route_falls_back_to_fp32(grader):
    chosen = prepare(grader.model, "auto", reference=torch.bfloat16)
    try:
        assert chosen.linear == "mkl" and chosen.probe_error > TOLERANCE
        assert "not fp32" in chosen.reason
    finally:
        prepare(grader.model, "auto")


def test_the_chosen_route_is_what_this_cpu_can_do_exactly(grader):
    chosen = grader.kernels
    assert chosen.requested == "auto" and chosen.linear in ("onednn", "mkl")
    # oneDNN only where its error is fp32's; MKL only where it is not.
    assert (chosen.linear == "onednn") == (chosen.probe_error <= TOLERANCE)


def test_kernels_grade_as_the_stock_path(fresh_grader, safety, items):
    ours = fresh_grader(kernels="auto").grade(safety, *items)
    stock = fresh_grader(kernels="stock").grade(safety, *items)
    assert float((ours.double() - stock.double()).abs().max()) < 1e-5


def test_fp32_inside_the_forward_whatever_the_user_set(fresh_grader, safety, items, user_precision):
    """Under the user's "medium" the stock path may compute in bf16 (on AMX); inside
    our model's forward the product is pinned to fp32 and the user's setting is
    back in place afterwards."""
    g = fresh_grader()
    seen = []
    hook = g.model.base_model.layers[0].register_forward_pre_hook(
        lambda m, a: seen.append(torch.backends.mkldnn.matmul.fp32_precision))
    grades = g.grade(safety, *items)
    hook.remove()
    assert set(seen) == {"bf16" if g.kernels.linear == "onednn" else "ieee"}
    assert settings() == user_precision
    torch.set_float32_matmul_precision("highest")
    exact = fresh_grader(kernels="stock").grade(safety, *items)
    assert float((grades.double() - exact.double()).abs().max()) < 1e-5


def test_settings_are_put_back_after_grading_and_after_an_error(grader, safety, items):
    before = settings()
    grader.grade(safety, *items)
    assert settings() == before
    with pytest.raises(IndexError):  # an id past the embedding: the forward raises midway
        grader.model(torch.tensor([[grader.model.config.vocab_size + 5]]))
    assert settings() == before
    with cpu_kernels.pinned("bf16"):
        assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"
    assert settings() == before


def test_stock_touches_nothing(fresh_grader, safety, items, user_precision):
    g = fresh_grader(kernels="stock")
    seen = []
    g.model.base_model.layers[0].register_forward_pre_hook(
        lambda m, a: seen.append(torch.backends.mkldnn.matmul.fp32_precision))
    g.grade(safety, items[0][:1], items[1][:1])
    assert set(seen) == {"bf16"}  # the user's "medium", as torch alone would run it
    assert g.kernels.linear == "stock"


def test_a_prepared_grader_pickles_and_probes_again(fresh_grader, safety, items):
    g = fresh_grader()
    copy = pickle.loads(pickle.dumps(g))
    assert copy.kernels == g.kernels
    body = copy.model.base_model
    assert sum(isinstance(h, cpu_kernels._Pin) for h in body._forward_pre_hooks.values()) == 1
    prepare(copy.model, "auto")  # again: re-probed, not hooked twice
    assert sum(isinstance(h, cpu_kernels._Pin) for h in body._forward_pre_hooks.values()) == 1
    assert float((copy.grade(safety, *items).double() - g.grade(safety, *items).double()).abs().max()) < 1e-6


def test_unknown_kernels_is_a_clear_error(fresh_grader):
    with pytest.raises(ValueError, match="kernels must be one of auto, stock"):
        fresh_grader(kernels="fast")
