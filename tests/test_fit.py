"""rbrc fit: comparison data, the exact hinge fit, the split and decay choice, the CLI, bad input."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from rbrlang.cli import main
from rbrlang.data.comparisons import ordered_pairs, rank_order, read_comparisons
from rbrlang.errors import DataError
from rbrlang.fit import fit_policy
from rbrlang.fit.solver import PairProblem, _line_search, _Risk, solve
from rbrlang.policy import load_policy

from tests.support.files import SAFETY, gold_rows, write
from tests.support.policies import MINIMAL
from .support.comparisons import gold_prompts, make_comparisons, write_jsonl

TWO = MINIMAL.replace('route "C-R" -> r\n', 'response s {\n  good = a\n  bad  = not a\n}\n\n'
                      'route "C-R" -> r\nroute "C-S" -> s\n')


# --- independent references ------------------------------------------------------------

def lp_optimum(D: np.ndarray, c: np.ndarray) -> tuple[float, np.ndarray]:
    """min_w mean_p max(0, c_p − D_p·w), as a linear program solved by HiGHS."""
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix, hstack, identity

    m, f = D.shape
    res = linprog(np.concatenate([np.zeros(f), np.full(m, 1.0 / m)]),
                  A_ub=hstack([csr_matrix(-D), -identity(m)]).tocsr(), b_ub=-c,
                  bounds=[(None, None)] * f + [(0, None)] * m, method="highs")
    assert res.status == 0, res.message
    return float(res.fun), res.x[:f]


def qp_optimum(D: np.ndarray, c: np.ndarray, decay: float) -> float:
    """min_w,ξ decay/2 |w|² + mean ξ, ξ ≥ c − D·w, ξ ≥ 0, by SLSQP (scipy)."""
    from scipy.optimize import minimize

    m, f = D.shape
    res = minimize(lambda x: 0.5 * decay * x[:f] @ x[:f] + x[f:].sum() / m,
                   np.concatenate([np.zeros(f), np.maximum(c, 0)]),
                   jac=lambda x: np.concatenate([decay * x[:f], np.full(m, 1.0 / m)]),
                   constraints=[{"type": "ineq", "fun": lambda x: D @ x[:f] + x[f:] - c,
                                 "jac": lambda x: np.hstack([D, np.eye(m)])}],
                   bounds=[(None, None)] * f + [(0, None)] * m, method="SLSQP",
                   options={"ftol": 1e-14, "maxiter": 2000})
    assert res.success, res.message
    return float(res.fun)


def table(policy, rows: list[dict], response_type: str):
    """Features, RM scores and brute-force (better, worse) pairs of one response
    type's rows, computed without rbrlang.fit or data.comparisons."""
    import torch

    rt = policy.response_type(response_type)
    rows = [r for r in rows if r["response_type"] == rt.name]
    names = policy.proposition_names
    probs = torch.tensor([[float(r["propositions"].get(n, 0.0)) for n in names] for r in rows],
                         dtype=torch.float64)
    X = policy.features(rt.name, probs).numpy()
    rm = np.array([r["rm_score"] for r in rows])
    rank = {c: i for i, c in enumerate(rt.classes)}  # the safety ranks are the class order
    by_prompt: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_prompt.setdefault(json.dumps(r["prompt"]), []).append(i)
    pairs = [(i, j) for idx in by_prompt.values() for i in idx for j in idx
             if rank[rows[i]["completion_label"]] < rank[rows[j]["completion_label"]]]
    b, w = np.array(pairs).T
    return X, rm, b, w


def errors(total: np.ndarray, b: np.ndarray, w: np.ndarray) -> float:
    return float(np.mean(~(total[b] > total[w])))


# --- the solver -------------------------------------------------------------------------

def random_problem(seed: int, prompts: int = 30, k: int = 5, f: int = 6) -> PairProblem:
    rng = np.random.default_rng(seed)
    n = prompts * k
    X = rng.random((n, f))
    utility = X @ rng.normal(size=f) + 0.5 * rng.normal(size=n)
    b, w = [], []
    for g in range(prompts):
        for i in range(g * k, (g + 1) * k):
            for j in range(g * k, (g + 1) * k):
                if utility[i] > utility[j] + 0.2:
                    b.append(i), w.append(j)
    return PairProblem(X, utility + rng.normal(size=n), np.array(b), np.array(w))


@pytest.mark.parametrize("decay", [1e-1, 1e-2, 1e-3])
def test_solver_reaches_the_quadratic_program_optimum(decay):
    p = random_problem(1)
    D = p.features[p.better] - p.features[p.worse]
    exact = qp_optimum(D, p.targets(1.0), decay)
    sol = solve(p, decay)
    assert sol.objective == pytest.approx(exact, abs=1e-6)
    assert sol.lower_bound <= exact + 1e-9  # the certificate is a true lower bound
    assert sol.gap <= 1e-6


def test_solver_training_loss_equals_the_linear_program_optimum(tmp_path):
    """fit_policy with a vanishing decay reaches the unregularised hinge optimum
    (HiGHS's linear program) on real generated comparison data."""
    policy = load_policy(SAFETY)
    rows = make_comparisons(policy, seed=5, response_types=["comply"], max_prompts=120)
    data = write_jsonl(tmp_path / "c.jsonl", rows)
    result = fit_policy(policy, data, decay=1e-7, val_fraction=0.0)
    m = result.fits["comply"].metrics
    X, rm, b, w = table(policy, rows, "comply")
    optimum, _ = lp_optimum(X[b] - X[w], 1.0 - (rm[b] - rm[w]))
    assert m["train_pairs"] == len(b) and m["val_pairs"] == 0
    assert m["train_loss"] == pytest.approx(optimum, abs=1e-3)
    assert m["train_loss"] >= optimum - 1e-9


def test_line_search_is_exact():
    rng = np.random.default_rng(3)
    for trial in range(12):
        n, f = 400, 4
        X = rng.random((n, f))
        if trial % 2:
            X = np.round(X)  # many equal breakpoints
        p = PairProblem(X, rng.normal(size=n), rng.integers(0, n, 6000), rng.integers(0, n, 6000))
        risk = _Risk(p, 1.0)
        w0, delta, decay = rng.normal(size=f), 3 * rng.normal(size=f), 10 ** rng.uniform(-4, 0)
        z = risk.slack(w0)
        step, d = _line_search(risk, z, w0, delta, decay)

        def phi(t):
            return 0.5 * decay * np.sum((w0 + t * delta) ** 2) + np.maximum(z - t * d, 0).mean()

        grid = np.linspace(0, max(3 * step, 1.0), 4001)
        assert step >= 0
        assert phi(step) <= min(phi(t) for t in grid) + 1e-12


def test_rank_order_compares_across_chains_but_not_peers(tmp_path):
    # Rank labels are classes (issue 14, D7): five of them, over three propositions.
    src = write(tmp_path / "p.rbr", "rbr 1\n" + "".join(f"proposition {v} = matches /{v}/\n" for v in "abc") + (
        "classes top > good > ok > meh > bad\nresponse r {\n  top = a and b and c\n  good = a and b and not c\n"
        "  ok = a and not b\n  meh = not a and b\n  bad = not a and not b\n"
        "  rank good > {ok, meh} > bad\n  rank top > good\n}\nroute default -> r\n"))
    assert main(["compile", str(src), "-o", str(tmp_path / "out")]) == 0
    order = rank_order(load_policy(tmp_path / "out").response_type("r"))
    above = {(a, b) for i, a in enumerate(order.labels) for j, b in enumerate(order.labels) if order.above[i, j]}
    assert above == {("good", "ok"), ("good", "meh"), ("good", "bad"), ("ok", "bad"), ("meh", "bad"),
                     ("top", "good"), ("top", "ok"), ("top", "meh"), ("top", "bad")}
    rng = np.random.default_rng(0)
    groups, labels = rng.integers(0, 40, 300), rng.integers(0, len(order.labels), 300)
    b, w = ordered_pairs(groups, labels, order.above)
    brute = {(i, j) for i in range(300) for j in range(300)
             if groups[i] == groups[j] and order.above[labels[i], labels[j]]}
    assert set(zip(b.tolist(), w.tolist())) == brute and len(b) == len(brute)


# --- fitting on generated comparisons ---------------------------------------------------

@pytest.fixture(scope="module")
def comply_split(tmp_path_factory):
    """Generated comply comparisons: the first 130 gold comply prompts to fit on,
    the other 65 held out."""
    policy = load_policy(SAFETY)
    comply = [p for p in gold_prompts() if policy.response_type(p[1]).name == "comply"]
    train = make_comparisons(policy, comply[:130], seed=11)
    held = make_comparisons(policy, comply[130:], seed=12)
    folder = tmp_path_factory.mktemp("comply")
    return policy, write_jsonl(folder / "train.jsonl", train), train, held


def test_fit_beats_the_rm_alone_and_is_near_the_exact_optimum_held_out(comply_split):
    policy, path, train, held = comply_split
    result = fit_policy(policy, path, seed=0)
    fw = result.fits["comply"].weights
    X, rm, b, w = table(policy, held, "comply")
    ours = errors(rm + X @ np.array(fw.weights) + fw.bias, b, w)
    rm_alone = errors(rm, b, w)
    Xt, rmt, bt, wt = table(policy, train, "comply")
    _, w_exact = lp_optimum(Xt[bt] - Xt[wt], 1.0 - (rmt[bt] - rmt[wt]))
    exact = errors(rm + X @ w_exact, b, w)
    assert rm_alone > 0.2  # the RM alone misorders many pairs
    assert ours < 0.15 and ours < rm_alone - 0.1
    assert ours <= exact + 0.02
    m = fw.metrics
    assert m["val_error"] < m["rm_val_error"] and m["decay_chosen_by"] == "validation"
    assert fw.decay in [g["decay"] for g in m["decay_grid"]]


def test_fit_is_deterministic_and_ignores_line_order(comply_split, tmp_path):
    policy, path, train, _ = comply_split
    first = fit_policy(policy, path, seed=3).fits["comply"].weights
    again = fit_policy(policy, path, seed=3).fits["comply"].weights
    shuffled = [train[i] for i in np.random.default_rng(0).permutation(len(train))]
    other = fit_policy(policy, write_jsonl(tmp_path / "s.jsonl", shuffled), seed=3).fits["comply"].weights
    assert first.weights == again.weights and first.bias == again.bias
    assert np.allclose(first.weights, other.weights, atol=1e-6)
    assert first.metrics["val_pairs"] == other.metrics["val_pairs"]


def test_split_is_by_prompt_and_bias_centres_the_rbr_term(comply_split):
    policy, path, train, _ = comply_split
    fit = fit_policy(policy, path, decay=1e-2, val_fraction=0.25).fits["comply"]
    m = fit.metrics
    assert m["train_prompts"] + m["val_prompts"] == m["prompts"] == 130
    assert m["val_prompts"] == round(0.25 * 130)
    assert m["train_pairs"] + m["val_pairs"] == m["pairs"]
    assert fit.weights.decay == 1e-2 and m["decay_chosen_by"] == "given" and "decay_grid" not in m
    everything = fit_policy(policy, path, decay=1e-2, val_fraction=0.0).fits["comply"].weights
    X, _, _, _ = table(policy, train, "comply")
    assert float(np.mean(X @ np.array(everything.weights) + everything.bias)) == pytest.approx(0.0, abs=1e-9)


# --- rbrc fit ------------------------------------------------------------------------------


def test_rbrc_fit_on_safety_writes_weights_the_policy_uses(safety_dir, tmp_path, rbrc):
    import torch

    policy = load_policy(safety_dir)
    rows = make_comparisons(policy, seed=21)
    data = write_jsonl(tmp_path / "comparisons.jsonl", rows)
    code, out, err = rbrc("fit", safety_dir, "--data", data)
    assert code == 0, err
    header = out.splitlines()[0].split()
    assert header[:2] == ["response", "type"] and "RM" in header
    for name in policy.response_types:
        assert any(line.startswith(name + " ") for line in out.splitlines()), out
    assert "wrote weights for 4 response types" in err
    fitted = load_policy(safety_dir)
    assert set(fitted.weights) == set(policy.response_types)
    doc = json.loads((safety_dir / "weights.json").read_text())
    import hashlib
    assert doc["response_types"]["comply"]["data_sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    for name, fw in fitted.weights.items():
        X, rm, b, w = table(fitted, rows, name)
        reward = fitted.reward(name, torch.tensor(X), rm_score=torch.tensor(rm)).numpy()
        assert np.allclose(reward, rm + X @ np.array(fw.weights) + fw.bias)
        assert errors(reward, b, w) < errors(rm, b, w)
        assert fw.metrics["val_error"] is not None and fw.metrics["rm_val_error"] is not None


def test_rbrc_fit_options_reach_the_weights(safety_dir, tmp_path, rbrc):
    policy = load_policy(safety_dir)
    data = write_jsonl(tmp_path / "c.jsonl", make_comparisons(policy, seed=2, response_types=["hard_refuse"],
                                                              rm=False))
    code, out, err = rbrc("fit", safety_dir, "--data", data, "--decay", "0.01", "--margin", "2", "--seed", "4",
                          "--val-fraction", "0.3")
    assert code == 0, err
    fw = load_policy(safety_dir).weights["hard_refuse"]
    assert (fw.decay, fw.margin) == (0.01, 2.0)
    assert fw.metrics["seed"] == 4 and fw.metrics["val_fraction"] == 0.3
    assert fw.metrics["rm_val_error"] is None  # no RM scores in the data: the RBR term alone
    assert "0.01*" in out and "decay given" in out


@pytest.mark.parametrize("option, value", [("--decay", "0"), ("--decay", "-1"), ("--decay", "nan"),
                                           ("--margin", "0"), ("--val-fraction", "1"), ("--val-fraction", "-0.1")])
def test_rbrc_fit_refuses_bad_settings(safety_dir, tmp_path, rbrc, option, value):
    data = write_jsonl(tmp_path / "c.jsonl", [])
    code, _, err = rbrc("fit", safety_dir, "--data", data, option, value)
    assert code == 2 and "rbrc fit: error:" in err and "Traceback" not in err


# --- bad input ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """A small policy with two response types: r (good > ok > bad on a, b) and s (good > bad on a)."""
    folder = tmp_path_factory.mktemp("two")
    src = write(folder / "p.rbr", TWO)
    assert main(["compile", str(src), "-o", str(folder / "out")]) == 0
    return folder / "out"


def row(prompt: str, label, a=0.9, b=0.9, rm=0.0, rt="r", **extra) -> dict:
    out = {"prompt": [{"role": "user", "content": prompt}], "completion": f"answer to {prompt}",
           "response_type": rt, "completion_label": label, "propositions": {"a": a, "b": b}, "rm_score": rm}
    out.update(extra)
    return {k: v for k, v in out.items() if v is not ...}


def usable() -> list[dict]:
    """Two prompts of r, each with a good, an ok and a bad completion."""
    return [row(p, lab, a, b, rm) for p in ("p1", "p2")
            for lab, a, b, rm in (("good", 0.9, 0.9, 0.1), ("ok", 0.9, 0.1, 0.3), ("bad", 0.1, 0.5, 0.2))]


def lines_of(rows: list) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


BAD = [
    ("label not a class", row("p3", "great"), "E0305", "is no label of response type `r`"),
    ("label missing", row("p3", ...), "E0305", "has no `completion_label`"),
    ("no propositions, no grader", row("p3", "good", propositions=...), "E0303", "no grader is given"),
    ("a proposition missing", row("p3", "good", propositions={"a": 0.5}), "E0303", "missing P(yes) for b"),
    ("not a probability", row("p3", "good", a=1.5), "E0304", "`a` is 1.5"),
    ("a string probability", row("p3", "good", b="yes"), "E0304", "`b` is \"yes\""),
    ("NaN score", '{"prompt": [{"role": "user", "content": "p3"}], "completion": "x", "response_type": "r", '
                  '"completion_label": "good", "propositions": {"a": 1, "b": 1}, "rm_score": NaN}',
     "E0306", "`rm_score` is NaN"),
    ("infinite score", '{"prompt": [{"role": "user", "content": "p3"}], "completion": "x", "response_type": "r", '
                       '"completion_label": "good", "propositions": {"a": 1, "b": 1}, "rm_score": -Infinity}',
     "E0306", "`rm_score` is -Infinity"),
    ("score not a number", row("p3", "good", rm="high"), "E0306", "must be a finite number"),
    ("score missing beside others", row("p3", "good", rm=...), "E0306", "other lines of response type `r`"),
    ("not JSON", '{"prompt": ', "E0300", "not valid JSON"),
    ("unknown response type", row("p3", "good", rt="nope"), "E0302", "unknown response type `nope`"),
    ("unknown proposition", row("p3", "good", propositions={"a": 1, "b": 1, "c": 0}), "E0301",
     "`c` is no proposition"),
]


@pytest.mark.parametrize("bad, code_, words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_lines_are_located_errors(two, tmp_path, rbrc, bad, code_, words):
    folder = tmp_path / "out"
    shutil.copytree(two, folder)
    data = write(tmp_path / "c.jsonl", lines_of(usable() + [bad]))
    code, out, err = rbrc("fit", folder, "--data", data)
    assert code == 1, err
    assert "c.jsonl:7:" in err and f"error[{code_}]" in err and words in err, err
    assert " | " in err and "^" in err and "= help:" in err  # the line, a caret, how to fix it
    assert "Traceback" not in err and out == ""
    assert not (folder / "weights.json").exists()


def test_every_bad_line_is_reported_at_once(two, tmp_path, rbrc):
    data = write(tmp_path / "c.jsonl", lines_of([row("p1", "great"), *usable(), row("p9", "good", a=2),
                                                 "not json"]))
    code, _, err = rbrc("fit", two, "--data", data)
    assert code == 1
    for where in ("c.jsonl:1:", "c.jsonl:8:", "c.jsonl:9:"):
        assert where in err, err
    assert "3 errors" in err


@pytest.mark.parametrize("text", ["", "\n\n  \n"], ids=["empty", "blank"])
def test_an_empty_file_is_an_error(two, tmp_path, rbrc, text):
    data = write(tmp_path / "c.jsonl", text)
    code, _, err = rbrc("fit", two, "--data", data)
    assert code == 1 and "error[E0307]" in err and "the file is empty" in err


def test_prompts_and_response_types_without_pairs_are_warnings(two, tmp_path, rbrc):
    folder = tmp_path / "out"
    shutil.copytree(two, folder)
    rows = usable() + [row("alone", "good"),  # one completion: no pair
                       row("same", "ok", rm=0.5), row("same", "ok", rm=0.4),  # one label: no pair
                       row("s1", "good", rt="s"), row("s2", "bad", rt="s")]  # s: no prompt with a pair
    data = write(tmp_path / "c.jsonl", lines_of(rows))
    code, out, err = rbrc("fit", folder, "--data", data)
    assert code == 0, err
    assert "c.jsonl:7:" in err and "warning[W0308]" in err and "it has one completion" in err
    assert "c.jsonl:8:" in err and "are not ordered by the rank order" in err
    assert "warning[W0309]" in err and "response type `s` has no usable pairs" in err
    assert "s: not fitted (no usable pairs)" in err
    assert set(load_policy(folder).weights) == {"r"}


def test_no_usable_pairs_is_an_error_not_a_zero_weight_file(safety_dir, tmp_path, rbrc):
    """The gold file: one completion per prompt (labels derived from its propositions)."""
    policy = load_policy(safety_dir)
    rows = []
    for r in gold_rows(40):
        rt = policy.route(r["category"]) if r.get("category") in policy.routes else \
            policy.response_type(r["response_type"]).name
        rows.append({**r, "completion_label": policy.classify(rt, r["propositions"])})
    data = write(tmp_path / "gold.jsonl", lines_of(rows))
    code, out, err = rbrc("fit", safety_dir, "--data", data)
    assert code == 1, err
    assert "error[E0310]" in err and "no usable pairs" in err
    assert "warning[W0308]" in err and "more prompts give no pair" in err
    assert not (safety_dir / "weights.json").exists()
    with pytest.raises(DataError):
        read_comparisons(policy, data)


def test_the_data_is_checked_before_any_grader_loads(two, tmp_path, rbrc):
    not_a_model = tmp_path / "model"
    not_a_model.mkdir()
    data = write(tmp_path / "c.jsonl", lines_of([row("p1", "good", propositions=...), row("p1", "great")]))
    code, _, err = rbrc("fit", two, "--data", data, "--grader", not_a_model)
    assert code == 1 and "error[E0305]" in err and "c.jsonl:2:" in err
    assert "cannot load grader" not in err


def test_rbrc_fit_grades_lines_without_propositions(two, tmp_path, rbrc, tiny_model_dir):
    folder = tmp_path / "out"
    shutil.copytree(two, folder)
    rows = [{k: v for k, v in r.items() if k != "propositions"} for r in usable()]
    data = write(tmp_path / "c.jsonl", lines_of(rows))
    code, out, err = rbrc("fit", folder, "--data", data, "--grader", tiny_model_dir, "--no-cache",
                          "--decay", "0.1", "--val-fraction", "0")
    assert code == 0, err
    assert "graded 6 lines with" in err
    fw = load_policy(folder).weights["r"]
    assert fw.metrics["pairs"] == 6 and fw.metrics["train_pairs"] == 6 and len(fw.weights) == 5


def more_rows(n: int = 6, boolean: bool = False) -> list[dict]:
    rng = np.random.default_rng(7)
    out = []
    for p in range(n):
        for label, (a, b) in (("good", (1, 1)), ("ok", (1, 0)), ("bad", (0, int(rng.integers(2))))):
            pa, pb = (bool(a), bool(b)) if boolean else (round(abs(a - rng.random() * 0.3), 4),
                                                          round(abs(b - rng.random() * 0.3), 4))
            out.append(row(f"q{p}", label, pa, pb, rm=round(float(rng.normal()), 4)))
    return out


def test_graded_probabilities_are_calibrated_and_human_labels_are_not(two, tmp_path):
    """A calibration.json mapping P(a) to 1 − P(a) (coef −1) fits exactly as
    data with a flipped does without one; booleans (human labels) stay as given."""
    from rbrlang.policy.calibration import Calibration, PlattMap, template_hash, write_calibration

    plain = load_policy(two)
    folder = tmp_path / "cal"
    shutil.copytree(two, folder)
    write_calibration(folder, Calibration(plain.name, {"a": PlattMap("a", template_hash(plain, "a"), -1.0, 0.0)}))
    calibrated = load_policy(folder)
    rows = more_rows()
    flipped = [{**r, "propositions": {**r["propositions"], "a": round(1 - r["propositions"]["a"], 4)}}
               for r in rows]
    kw = dict(decay=0.1, val_fraction=0.0)
    with_cal = fit_policy(calibrated, write_jsonl(tmp_path / "a.jsonl", rows), **kw).fits["r"].weights
    by_hand = fit_policy(plain, write_jsonl(tmp_path / "b.jsonl", flipped), **kw).fits["r"].weights
    without = fit_policy(plain, tmp_path / "a.jsonl", **kw).fits["r"].weights
    assert np.allclose(with_cal.weights, by_hand.weights, atol=1e-6)
    assert not np.allclose(with_cal.weights, without.weights, atol=1e-3)
    human = write_jsonl(tmp_path / "h.jsonl", more_rows(boolean=True))
    assert np.allclose(fit_policy(calibrated, human, **kw).fits["r"].weights.weights,
                       fit_policy(plain, human, **kw).fits["r"].weights.weights)


def test_without_validation_prompts_the_default_decay_is_used(two, tmp_path):
    from rbrlang.fit.select import DEFAULT_DECAY

    fit = fit_policy(load_policy(two), write_jsonl(tmp_path / "c.jsonl", more_rows()), val_fraction=0.0).fits["r"]
    assert fit.weights.decay == DEFAULT_DECAY and fit.metrics["val_pairs"] == 0
    assert fit.metrics["decay_chosen_by"].startswith("default") and fit.metrics["val_error"] is None


def test_unrouted_lines_are_skipped_and_counted(tmp_path, rbrc):
    two_dir = tmp_path / "two"
    src = write(tmp_path / "p.rbr", TWO.replace("route default -> r\n", ""))
    assert main(["compile", str(src), "-o", str(two_dir)]) == 0
    rows = more_rows() + [{**row("z", "good"), "category": "elsewhere", "response_type": None}]
    data = write_jsonl(tmp_path / "c.jsonl", rows)
    code, _, err = rbrc("fit", two_dir, "--data", data)
    assert code == 0, err
    assert "1 line of" in err and "route to no response type" in err
    assert read_comparisons(load_policy(two_dir), data).unrouted == 1


def test_a_missing_data_file_is_one_line(two, tmp_path, rbrc):
    code, _, err = rbrc("fit", two, "--data", tmp_path / "nope.jsonl")
    assert code == 1 and "nope.jsonl: no such file" in err and "Traceback" not in err


def test_matches_propositions_come_from_the_completion_text(tmp_path):
    text = MINIMAL.replace('classes good', 'proposition empty = matches /^\\s*$/\n\nclasses good').replace(
        "good = a and b", "good = a and b and not empty").replace("ok   = a and not b",
                                                                   "ok   = a and not (b and not empty)")
    src = write(tmp_path / "p.rbr", text)
    assert main(["compile", str(src), "-o", str(tmp_path / "out")]) == 0
    policy = load_policy(tmp_path / "out")
    rows = usable()
    rows[0]["completion"] = "   "  # an empty completion: `empty` holds, though no line gives it
    data = read_comparisons(policy, write_jsonl(tmp_path / "c.jsonl", rows))
    column = policy.proposition_names.index("empty")
    assert data.probs[:, column].tolist() == [1.0] + [0.0] * 5
    assert not data.to_grade.any() and data.sha256 and len(data) == 6


def test_fit_data_quality_warnings(two, tmp_path, rbrc):
    """Issue 14 D8: a repeated file does not multiply the pairs, a completion labelled two ways
    and a value given for a `matches` proposition are named, and an absurd rm_score is refused."""
    policy = load_policy(two)
    once = read_comparisons(policy, write(tmp_path / "once.jsonl", lines_of(usable())))
    twice = read_comparisons(policy, write(tmp_path / "twice.jsonl", lines_of(usable() + usable())))
    assert len(twice) == len(once) == 6
    repeats = [d for d in twice.warnings if d.code == "W0313"]
    assert [(d.span.line, d.message) for d in repeats][:1] == [(7, "the same line as line 1: counted once")]
    assert len(repeats) == 6
    contradiction = usable() + [row("p1", "bad", rm=0.7)]  # p1's good completion (same P(yes)), now labelled bad
    data = read_comparisons(policy, write(tmp_path / "c.jsonl", lines_of(contradiction)))
    (d,) = [d for d in data.warnings if d.code == "W0313"]
    assert d.span.line == 7 and "labelled `good` there and `bad` here" in d.message
    code, _, err = rbrc("fit", two, "--data", write(tmp_path / "big.jsonl", lines_of(usable()[:-1] + [
        row("p2", "bad", rm=1e308)])))
    assert code == 1 and "big.jsonl:6:" in err and "error[E0306]" in err and "1e+308" in err


def test_a_given_value_for_a_matches_proposition_does_not_override_its_pattern(tmp_path):
    src = write(tmp_path / "m.rbr", MINIMAL.replace("classes", "proposition empty = matches /^$/\n\nclasses", 1))
    assert main(["compile", str(src), "-o", str(tmp_path / "out")]) == 0
    policy = load_policy(tmp_path / "out")
    rt = next(iter(policy.response_types.values()))
    labels = [c for c in rt.classes]
    rows = [{"prompt": [{"role": "user", "content": "q"}], "completion": f"c{k}", "response_type": rt.name,
             "completion_label": lab, "propositions": {n: 0.5 for n in policy.proposition_names if n != "empty"}
             | ({"empty": True} if k == 0 else {})} for k, lab in enumerate(labels)]
    data = read_comparisons(policy, write(tmp_path / "d.jsonl", lines_of(rows)))
    (d,) = [d for d in data.warnings if d.code == "W0314"]
    assert d.span.line == 1 and "its pattern decides" in d.message
    assert data.probs[0, policy.proposition_names.index("empty")] == 0.0  # "c0" is not empty: the pattern's answer
