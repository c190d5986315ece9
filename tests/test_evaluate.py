"""rbrc eval: gold-set metrics, Platt calibration (calibration.json), rewards on
comparisons, the HTML report and its plots, and every bad input."""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from rbrlang.errors import PolicyError
from rbrlang.evaluate import evaluate
from rbrlang.evaluate.calibration import fit_platt, logit
from rbrlang.data.comparisons import error_rate, pairs_of, rank_order, read_comparisons
from rbrlang.evaluate.metrics import ece, tune_threshold
from rbrlang.policy import load_policy
from rbrlang.policy.calibration import read_calibration

from tests.support.files import ROOT, SHARED, gold_rows, write
from tests.support.policies import MINIMAL

GOLD = SHARED / "gold_train.jsonl"
needs_data = pytest.mark.skipif(not GOLD.exists(), reason="shared gold data not present")


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _label_probs(rows, noise=None, seed=0) -> list[dict]:
    """One probabilities line per gold row: the human labels as P(yes), or a
    miscalibrated but informative version of them."""
    rng = random.Random(seed)
    out = []
    for r in rows:
        props = {}
        for k, v in r["propositions"].items():
            props[k] = float(v) if noise is None else min(1.0, max(0.0, noise(v, rng)))
        out.append({"propositions": props})
    return out


def _png_facts(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20) or []
        return im.size, len(colours)


def _assert_real_plot(path: Path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert len(data) > 10_000, (path, len(data))
    (w, h), colours = _png_facts(path)
    assert w > 300 and h > 250 and colours >= 5, (path, w, h, colours)


# --- the plumbing check --------------------------------------------------------------------


@needs_data
def test_report_from_gold_labels_as_probabilities_is_perfect(safety_dir, tmp_path, rbrc):
    rows = gold_rows(shortest=False)
    probs = _jsonl(tmp_path / "probs.jsonl", _label_probs(rows))
    report = tmp_path / "report"
    code, out, err = rbrc("eval", safety_dir, "--report", report, "--gold", GOLD, "--probs", probs)
    assert code == 0, err
    assert "class accuracy 100.0%" in out
    page = (report / "report.html").read_text(encoding="utf-8")
    assert "Class accuracy: 100.0%" in page
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert pngs == ["confusion.png", "reliability.png", "reliability_by_proposition.png"]
    for name in pngs:
        _assert_real_plot(report / name)
    # self-contained: every plot embedded, nothing fetched from elsewhere
    assert page.count("data:image/png;base64,") == len(pngs)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    # every response type of the gold set has its confusion matrix, diagonal only
    policy = load_policy(safety_dir)
    ev = evaluate(policy, gold=GOLD, probs=probs)
    assert ev.gold.class_accuracy == 1.0 and sum(c.n for c in ev.gold.confusions) == len(rows)
    for c in ev.gold.confusions:
        assert (c.matrix == np.diag(np.diag(c.matrix))).all()
    scores = {s.name: s for s in ev.gold.propositions}
    assert set(scores) == set(policy.proposition_names)
    assert all(s.accuracy == 1.0 and s.ece == 0.0 and s.brier == 0.0 for s in scores.values())
    assert all(s.auroc == 1.0 for s in scores.values() if s.auroc is not None)
    assert not (safety_dir / "calibration.json").exists()  # only --calibrate writes it


@needs_data
def test_noisy_probabilities_lower_the_scores(safety_dir, tmp_path):
    """The metrics are not constant: a grader that flips labels scores lower."""
    rows = gold_rows(shortest=False)
    flip = _label_probs(rows, noise=lambda v, rng: (1.0 - float(v)) if rng.random() < 0.3 else float(v))
    probs = _jsonl(tmp_path / "probs.jsonl", flip)
    ev = evaluate(load_policy(safety_dir), gold=GOLD, probs=probs, seed=1)
    assert 0.3 < ev.gold.class_accuracy < 0.95
    f1 = [s.f1 for s in ev.gold.propositions if s.positives >= 10]
    assert f1 and max(f1) < 1.0


# --- calibration -----------------------------------------------------------------------------


def test_platt_fit_recovers_a_known_map():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, 20000)
    true = 1 / (1 + np.exp(-(0.5 * logit(p) - 0.7)))  # an overconfident, yes-biased grader
    y = (rng.uniform(size=p.size) < true).astype(int)
    coef, intercept = fit_platt(y[:10000], p[:10000])
    assert abs(coef - 0.5) < 0.05 and abs(intercept + 0.7) < 0.07
    cal = 1 / (1 + np.exp(-(coef * logit(p[10000:]) + intercept)))
    assert ece(y[10000:], cal) < 0.02 < ece(y[10000:], p[10000:])


def test_platt_fit_is_finite_on_perfectly_separated_labels():
    y = np.array([0, 0, 1, 1, 1])
    coef, intercept = fit_platt(y, y.astype(float))
    assert math.isfinite(coef) and math.isfinite(intercept) and coef > 0


def test_threshold_is_tuned_on_the_fit_rows():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.05, 0.1, 0.2, 0.25, 0.3, 0.9])  # 0.5 would miss two yes labels
    t = tune_threshold(y, p)
    assert 0.2 < t <= 0.25
    assert tune_threshold(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4])) == 0.5


@needs_data
def test_calibrate_writes_calibration_json_that_load_policy_applies(safety_dir, tmp_path, rbrc):
    rows = gold_rows(shortest=False)
    # informative but squeezed toward 0.5: calibration should stretch it
    squeezed = _label_probs(rows, noise=lambda v, rng: 0.35 + 0.3 * float(v) + rng.uniform(-0.1, 0.1), seed=3)
    probs = _jsonl(tmp_path / "probs.jsonl", squeezed)
    old = os.umask(0o022)
    try:
        code, out, err = rbrc("eval", safety_dir, "--report", tmp_path / "r", "--gold", GOLD, "--probs", probs,
                              "--calibrate", "--seed", "7")
    finally:
        os.umask(old)
    assert code == 0, err
    path = safety_dir / "calibration.json"
    assert path.stat().st_mode & 0o777 == 0o644  # the umask's mode, readable by a trainer
    assert not [p for p in safety_dir.iterdir() if p.name.startswith(".")]  # no temporary left
    doc = json.loads(path.read_text())
    assert doc["format"] == 1 and doc["policy"] == "safety" and doc["method"] == "platt"
    policy = load_policy(safety_dir)
    assert policy.calibration is not None and set(policy.calibration.maps) == set(doc["propositions"])
    assert f"calibrated {len(doc['propositions'])} propositions" in out
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Calibration (Platt scaling" in page
    # ECE on the report split falls for every calibrated proposition with enough labels
    for name, row in doc["propositions"].items():
        m = row["metrics"]
        assert m["fit_rows"] > 0 and m["report_rows"] > 0
        assert m["ece_calibrated"] < m["ece_raw"], name
    # calibrate(): each calibrated column through its map, the others untouched, torch and NumPy alike
    raw = torch.rand(6, len(policy.proposition_names), dtype=torch.float64)
    cal = policy.calibrate(raw)
    assert torch.is_tensor(cal) and cal.shape == raw.shape and not torch.equal(cal, raw)
    for j, name in enumerate(policy.proposition_names):
        if name in doc["propositions"]:
            c, b = doc["propositions"][name]["coef"], doc["propositions"][name]["intercept"]
            expected = torch.sigmoid(c * torch.logit(raw[:, j].clamp(1e-6, 1 - 1e-6)) + b)
            assert torch.allclose(cal[:, j], expected)
        else:
            assert torch.equal(cal[:, j], raw[:, j])
    assert np.allclose(policy.calibrate(raw.numpy()), cal.numpy())
    (safety_dir / "calibration.json").rename(tmp_path / "kept.json")
    assert load_policy(safety_dir).calibration is None and torch.equal(load_policy(safety_dir).calibrate(raw), raw)
    (tmp_path / "kept.json").rename(safety_dir / "calibration.json")
    # a later eval without --calibrate scores with the stored calibration
    ev = evaluate(policy, gold=GOLD, probs=probs, seed=7)
    assert "calibration.json" in ev.gold.probabilities and ev.gold.p_cal is not None


def test_trainer_side_calibration_needs_no_scikit_learn(safety_dir):
    from rbrlang.policy.calibration import Calibration, PlattMap, template_hash, write_calibration

    policy = load_policy(safety_dir)
    write_calibration(safety_dir, Calibration("safety", {"apology": PlattMap(
        "apology", template_hash(policy, "apology"), 2.0, -1.0)}))
    code = ("import sys, torch; from rbrlang.policy import load_policy; "
            f"p = load_policy({str(safety_dir)!r}); x = p.calibrate(torch.full((2, 23), 0.5)); "
            "assert abs(float(x[0, 0]) - 1 / (1 + 2.718281828459045)) < 1e-6, x[0, 0]; "
            "bad = [m for m in ('sklearn', 'scipy', 'matplotlib') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_calibration_for_another_template_names_both_hashes(safety_dir, rbrc, tmp_path):
    from rbrlang.policy.calibration import Calibration, PlattMap, write_calibration

    policy = load_policy(safety_dir)
    stale = "ab" * 32
    write_calibration(safety_dir, Calibration("safety", {"apology": PlattMap("apology", stale, 1.5, 0.1)}))
    current = json.loads((safety_dir / "policy.json").read_text())["propositions"][0]["template_sha256"]
    with pytest.raises(PolicyError) as info:
        load_policy(safety_dir)
    assert stale in str(info.value) and current in str(info.value) and "`apology`" in str(info.value)
    code, _, err = rbrc("eval", safety_dir, "--report", tmp_path / "r", "--comparisons", tmp_path / "c.jsonl")
    assert code == 1 and stale in err and "Traceback" not in err
    # other broken files: one-line errors too
    for text, needle in (("{", "not valid JSON"), ('{"format": 9}', "format 1"),
                         (json.dumps({"format": 1, "policy": "other", "method": "platt", "propositions": {}}),
                          "`other`"),
                         (json.dumps({"format": 1, "policy": "safety", "method": "platt",
                                      "propositions": {"apology": {"coef": "x", "intercept": 0}}}), "finite")):
        (safety_dir / "calibration.json").write_text(text)
        with pytest.raises(PolicyError, match=needle):
            read_calibration(safety_dir, policy)


# --- comparisons and rewards ----------------------------------------------------------------


def _comparisons(policy, rows, per_prompt=5, prompts=25, seed=0) -> list[dict]:
    """Synthetic comparisons over gold prompts: completions with other gold rows'
    labels, a class label, and an RM score that misorders some pairs."""
    rng = random.Random(seed)
    by_rt = {}
    for r in rows:
        by_rt.setdefault(policy.response_type(r["response_type"]).name, []).append(r)
    out = []
    for rt_name, rs in by_rt.items():
        rt = policy.response_type(rt_name)
        for r in rs[:prompts]:
            for o in [r] + rng.sample(rs, min(per_prompt - 1, len(rs))):
                cls = policy.classify(rt_name, o["propositions"])
                out.append({"prompt": r["prompt"], "completion": o["completion"], "response_type": rt_name,
                            "completion_label": cls,
                            "rm_score": -rt.classes.index(cls) + rng.gauss(0, 1.5),
                            "propositions": o["propositions"]})
    return out


def _brute_error(rows, rewards, policy) -> float:
    bad = total = 0
    for i, a in enumerate(rows):
        for j, b in enumerate(rows):
            if a["prompt"] == b["prompt"] and a["response_type"] == b["response_type"]:
                rt = policy.response_type(a["response_type"])
                if rt.classes.index(a["completion_label"]) < rt.classes.index(b["completion_label"]):
                    total += 1
                    bad += not rewards[i] > rewards[j]
    return bad / total


@needs_data
def test_comparisons_error_rates_and_histograms(safety_dir, tmp_path, rbrc):
    policy = load_policy(safety_dir)
    rows = _comparisons(policy, gold_rows(shortest=False))
    data = _jsonl(tmp_path / "cmp.jsonl", rows)
    report = tmp_path / "report"
    code, out, err = rbrc("eval", safety_dir, "--report", report, "--comparisons", data)
    assert code == 0, err
    ev = evaluate(policy, comparisons=data)
    by_rt = {r.response_type: r for r in ev.rewards.rows}
    for rt_name in ("hard_refuse", "comply"):
        mine = [r for r in rows if r["response_type"] == rt_name]
        rm = [r["rm_score"] for r in mine]
        assert by_rt[rt_name].pairs > 20
        assert by_rt[rt_name].errors["RM"] == pytest.approx(_brute_error(mine, rm, policy))
        assert by_rt[rt_name].errors["RM"] > 0.1  # the RM misorders pairs
        assert by_rt[rt_name].errors["RBR"] == 0.0  # labels are exact, and unfitted rewards follow the class
        assert by_rt[rt_name].errors["RM + RBR"] < by_rt[rt_name].errors["RM"]
        assert f"{rt_name}: {by_rt[rt_name].pairs} pairs" in out
    for name in ("error_rates.png", "reward_histograms.png"):
        _assert_real_plot(report / name)
    page = (report / "report.html").read_text()
    assert "Rewards on held-out comparisons" in page and "expected class score (not fitted)" in page
    # centred per prompt: each prompt's centred rewards sum to zero
    labels, centred = ev.rewards.centred[("RBR", "comply")]
    assert len(labels) == len(centred) and abs(centred.sum()) < 1e-9
    assert "no `rm_score`" not in page
    # without RM scores for one response type: RBR only there, and the report says why
    _jsonl(data, [dict(r, rm_score=None) if r["response_type"] == "comply" else r for r in rows])
    ev = evaluate(policy, comparisons=data)
    comply = next(r for r in ev.rewards.rows if r.response_type == "comply")
    assert comply.errors["RM"] is None and comply.errors["RM + RBR"] is None and comply.errors["RBR"] == 0.0
    assert any("comply: some lines have no `rm_score`" in n for n in ev.rewards.notes)


def test_rank_order_with_peers_and_ties_count_as_errors(tmp_path, rbrc):
    # Rank labels are classes (issue 14, D7).
    src = write(tmp_path / "p.rbr", MINIMAL.replace("classes good > ok > bad", "classes best > x > y > worst").replace(
        "  good = a and b\n  ok   = a and not b\n  bad  = not a\n",
        "  best = a and b\n  x = a and not b\n  y = not a and b\n  worst = not a and not b\n"
        "  rank best > {x, y} > worst\n  rank x > worst\n"))
    assert rbrc("compile", src, "-o", tmp_path / "c")[0] == 0
    policy = load_policy(tmp_path / "c")
    order = rank_order(policy.response_type("r"))
    above = {a: {b for b in order.labels if order.above[order.index(a), order.index(b)]} for a in order.labels}
    assert above["best"] >= {"x", "y", "worst"} and "y" not in above["x"] and above["x"] >= {"worst"}
    prompt = [{"role": "user", "content": "hi"}]
    lines = [{"prompt": prompt, "completion": c, "response_type": "r", "completion_label": lab,
              "propositions": {"a": True, "b": b}}
             for c, lab, b in (("1", "best", True), ("2", "x", True), ("3", "y", False), ("4", "worst", False))]
    data = read_comparisons(policy, _jsonl(tmp_path / "c.jsonl", lines))
    better, worse = pairs_of(policy, data, np.arange(4))
    assert sorted(zip(better.tolist(), worse.tolist())) == [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]  # x, y peers
    assert error_rate(np.array([3.0, 2.0, 2.0, 1.0]), better, worse) == 0.0
    assert error_rate(np.array([3.0, 3.0, 2.0, 1.0]), better, worse) == pytest.approx(1 / 5)  # a tie is an error
    assert error_rate(np.zeros(4), np.zeros(0, int), np.zeros(0, int)) is None


# --- the grader path ---------------------------------------------------------------------------


@needs_data
def test_grader_and_its_grade_output_give_the_same_report(safety_dir, tmp_path, tiny_model_dir, grader, rbrc):
    rows = gold_rows(8)
    gold = _jsonl(tmp_path / "gold.jsonl", rows)
    graded = tmp_path / "graded.jsonl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random tiny model puts little mass on yes/no
        code, _, err = rbrc("grade", safety_dir, "--data", gold, "--grader", tiny_model_dir, "-o", graded,
                            "--no-cache")
        assert code == 0, err
        code, out, err = rbrc("eval", safety_dir, "--report", tmp_path / "r", "--gold", gold,
                              "--grader", tiny_model_dir, "--no-cache")
        assert code == 0, err
        policy = load_policy(safety_dir)
        a = evaluate(policy, gold=gold, grader=grader)
    b = evaluate(policy, gold=gold, probs=graded)  # `rbrc grade` rows name their gold line
    assert a.gold.source.startswith("grader") and b.gold.source.startswith("probabilities")
    assert a.gold.class_accuracy == b.gold.class_accuracy
    for x, y in zip(a.gold.propositions, b.gold.propositions):
        assert x.name == y.name and x.threshold == pytest.approx(y.threshold, abs=1e-6)
        assert x.brier == pytest.approx(y.brier, abs=1e-6)
    assert "Grader against gold labels" in (tmp_path / "r" / "report.html").read_text()


# --- bad input ---------------------------------------------------------------------------------


def _no_trace(err: str) -> None:
    assert "Traceback" not in err and "internal error" not in err


@needs_data
def test_missing_files_are_one_line_errors(safety_dir, tmp_path, rbrc):
    probs = _jsonl(tmp_path / "probs.jsonl", _label_probs(gold_rows(shortest=False)))
    cases = [
        (("eval", safety_dir, "--report", tmp_path / "r", "--gold", tmp_path / "none.jsonl", "--probs", probs),
         "none.jsonl: no such file"),
        (("eval", safety_dir, "--report", tmp_path / "r", "--gold", GOLD, "--probs", tmp_path / "nope.jsonl"),
         "nope.jsonl: no such file"),
        (("eval", tmp_path / "nothing", "--report", tmp_path / "r", "--gold", GOLD, "--probs", probs),
         "nothing"),
        (("eval", safety_dir, "--report", tmp_path / "r", "--comparisons", tmp_path / "c.jsonl"), "c.jsonl"),
        (("eval", safety_dir, "--report", tmp_path / "r", "--gold", GOLD, "--grader", tmp_path / "no-model"),
         "cannot load grader"),
    ]
    for args, needle in cases:
        code, _, err = rbrc(*args)
        assert code == 1 and needle in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
        _no_trace(err)
    assert not (tmp_path / "r").exists()  # nothing written on failure


@pytest.mark.parametrize("args, needle", [
    ((), "nothing to evaluate"),
    (("--gold", "g.jsonl"), "exactly one of --probs"),
    (("--probs", "p.jsonl", "--comparisons", "c.jsonl"), "give --gold too"),
    (("--comparisons", "c.jsonl", "--calibrate"), "--calibrate fits on a gold set"),
])
def test_usage_mistakes_exit_2(safety_dir, tmp_path, rbrc, args, needle):
    code, _, err = rbrc("eval", safety_dir, "--report", tmp_path / "r", *args)
    assert code == 2 and needle in err
    _no_trace(err)


def _gold_line(**change) -> dict:
    row = dict(gold_rows(1)[0])
    row.update(change)
    return {k: v for k, v in row.items() if v is not None}


@needs_data
def test_bad_gold_lines_are_located(safety_dir, tmp_path, rbrc):
    good = gold_rows(3)
    props = dict(good[0]["propositions"])
    del props["apology"]
    half = dict(good[0], propositions={k: v for k, v in props.items()})
    lines = [good[0], dict(good[1], propositions=None), half, dict(good[2], propositions={**good[2]["propositions"],
                                                                                       "apology": 0.7})]
    lines[1] = {k: v for k, v in lines[1].items() if v is not None}
    gold = _jsonl(tmp_path / "gold.jsonl", lines)
    probs = _jsonl(tmp_path / "p.jsonl", _label_probs(good[:1] * 4))
    code, _, err = rbrc("eval", safety_dir, "--report", tmp_path / "r", "--gold", gold, "--probs", probs)
    assert code == 1
    assert "gold.jsonl:2:1: error[E0303]: the gold line has no `propositions`" in err
    assert "gold.jsonl:3:" in err and "missing label" in err and "apology" in err
    assert "gold.jsonl:4:" in err and "error[E0304]" in err and "true or false" in err
    assert "^" in err  # the line is shown with a caret
    _no_trace(err)
    assert not (tmp_path / "r").exists()


@needs_data
@pytest.mark.parametrize("value", [1.5, -0.25, "NaN", "\"high\""])
def test_probabilities_out_of_range_are_located(safety_dir, tmp_path, rbrc, value):
    rows = gold_rows(4)
    gold = _jsonl(tmp_path / "gold.jsonl", rows)
    lines = [json.dumps(p) for p in _label_probs(rows)]
    lines[2] = lines[2].replace('"judgement": 1.0', f'"judgement": {value}').replace(
        '"judgement": 0.0', f'"judgement": {value}')
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    code, _, err = rbrc("eval", safety_dir, "--report", tmp_path / "r", "--gold", gold, "--probs", tmp_path / "p.jsonl")
    assert code == 1 and "p.jsonl:3:" in err and "error[E0304]" in err and "`judgement`" in err, err
    _no_trace(err)


@needs_data
def test_probabilities_that_do_not_fit_the_gold_set(safety_dir, tmp_path, rbrc):
    rows = gold_rows(4)
    gold = _jsonl(tmp_path / "gold.jsonl", rows)
    short = _jsonl(tmp_path / "short.jsonl", _label_probs(rows[:3]))
    code, _, err = rbrc("eval", safety_dir, "--report", tmp_path / "r", "--gold", gold, "--probs", short)
    assert code == 1 and "3 probability lines for 4 gold lines" in err
    named = _jsonl(tmp_path / "named.jsonl", [dict(p, line=9) for p in _label_probs(rows[:1])])
    code, _, err = rbrc("eval", safety_dir, "--report", tmp_path / "r", "--gold", gold, "--probs", named)
    assert code == 1 and "named.jsonl:1:" in err and "line 9 of" in err
    _no_trace(err)


@needs_data
def test_report_folder_rules(safety_dir, tmp_path, rbrc):
    rows = gold_rows(20)
    gold = _jsonl(tmp_path / "gold.jsonl", rows)
    probs = _jsonl(tmp_path / "p.jsonl", _label_probs(rows))
    args = ("eval", safety_dir, "--gold", gold, "--probs", probs, "--report")
    # a folder that cannot be made: under a regular file
    blocker = write(tmp_path / "file.txt", "keep me\n")
    code, _, err = rbrc(*args, blocker / "report")
    assert code == 1 and "file.txt" in err and len(err.strip().splitlines()) == 1
    _no_trace(err)
    # a folder of the user's: refused, untouched
    mine = tmp_path / "mine"
    write(mine / "notes.txt", "precious\n")
    code, _, err = rbrc(*args, mine)
    assert code == 1 and "mine" in err and "earlier `rbrc eval` report" in err
    assert (mine / "notes.txt").read_text() == "precious\n" and sorted(os.listdir(mine)) == ["notes.txt"]
    # a new folder, then the same folder again: an earlier report is replaced
    out = tmp_path / "out"
    assert rbrc(*args, out)[0] == 0
    first = (out / "report.html").stat().st_mtime_ns
    assert rbrc(*args, out)[0] == 0 and (out / "report.html").stat().st_mtime_ns >= first
    # an empty folder is fine too
    (tmp_path / "empty").mkdir()
    assert rbrc(*args, tmp_path / "empty")[0] == 0
    # an earlier report the user added a file to is no longer provably ours
    write(out / "my-notes.md", "mine\n")
    code, _, err = rbrc(*args, out)
    assert code == 1 and "earlier `rbrc eval` report" in err and (out / "my-notes.md").read_text() == "mine\n"
    # the report folder may not be the compiled folder or hold an input
    code, _, err = rbrc(*args, tmp_path)
    assert code == 1 and str(tmp_path) in err and len(err.strip().splitlines()) == 1
    _no_trace(err)


@needs_data
def test_bad_comparison_lines(safety_dir, tmp_path, rbrc):
    policy = load_policy(safety_dir)
    rows = _comparisons(policy, gold_rows(shortest=False), prompts=2, per_prompt=2)
    rows[0] = dict(rows[0], completion_label="superb")
    rows[1] = dict(rows[1], rm_score=float("nan"))
    rows[2] = {k: v for k, v in rows[2].items() if k != "propositions"}
    data = tmp_path / "cmp.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))  # json writes NaN, which json reads back
    code, _, err = rbrc("eval", safety_dir, "--report", tmp_path / "r", "--comparisons", data)
    assert code == 1
    assert "cmp.jsonl:1:" in err and "`completion_label` \"superb\"" in err
    assert "cmp.jsonl:2:" in err and "`rm_score` is NaN" in err
    _no_trace(err)
    # without propositions and without a grader: says which line and what to give
    _jsonl(data, [r for r in rows[2:]])
    code, _, err = rbrc("eval", safety_dir, "--report", tmp_path / "r", "--comparisons", data)
    assert code == 1 and "cmp.jsonl:1:1: error[E0303]" in err and "--grader" in err
    _no_trace(err)
    assert not (tmp_path / "r").exists()


def test_a_file_of_bad_lines_stops_at_twenty_and_says_so(tmp_path, rbrc):
    """Every line lacking `propositions` (and no grader): twenty located errors,
    the last one saying the rest was not read, not one per line of a big file."""
    src = write(tmp_path / "p.rbr", MINIMAL)
    assert rbrc("compile", src, "-o", tmp_path / "compiled")[0] == 0
    rows = [{"prompt": [{"role": "user", "content": f"q{i // 2}"}], "completion": f"c{i}", "response_type": "r",
             "completion_label": "good"} for i in range(500)]
    data = _jsonl(tmp_path / "cmp.jsonl", rows)
    code, _, err = rbrc("eval", tmp_path / "compiled", "--report", tmp_path / "r", "--comparisons", data)
    assert code == 1 and err.count("error[E0303]") == 20 and "cmp.jsonl:21:" not in err
    assert "note: reading stopped after 20 bad lines; lines after line 20 were not checked" in err
    gold = _jsonl(tmp_path / "gold.jsonl", [{"prompt": [], "completion": "x", "response_type": "r",
                                             "propositions": {"a": 0.5, "b": True}}] * 50)
    code, _, err = rbrc("eval", tmp_path / "compiled", "--report", tmp_path / "r", "--gold", gold, "--probs", gold)
    assert code == 1 and err.count("error[E0304]") == 20 and "reading stopped after 20 bad lines" in err
    assert not (tmp_path / "r").exists()


def test_error_rate_bars_carry_their_values():
    """A reward with no wrong pairs has no bar to see: the value is written on it."""
    from types import SimpleNamespace

    from rbrlang.evaluate import plots

    rows = [SimpleNamespace(response_type="r", errors={"RM": 0.5, "RBR": 0.0, "RM + RBR": None})]
    calls = []
    plt = plots._pyplot()
    real = plt.Axes.bar_label

    def spy(self, container, *args, **kwargs):
        calls.append([round(float(b.get_height()), 3) for b in container])
        return real(self, container, *args, **kwargs)

    plt.Axes.bar_label = spy
    try:
        png = plots.error_rates(rows, ["RM", "RBR", "RM + RBR"])
    finally:
        plt.Axes.bar_label = real
    assert png.startswith(b"\x89PNG") and calls == [[0.5], [0.0], []]


def test_undefined_precision_recall_and_f1_are_not_zero():
    """No yes label and no yes prediction: nothing to score, shown as –, not 0.000."""
    from rbrlang.evaluate.metrics import proposition_scores

    y, p = np.array([0.0, 0.0, 0.0]), np.array([0.1, 0.2, 0.3])
    s = proposition_scores("empty", y, p, y, p)
    assert math.isnan(s.precision) and math.isnan(s.recall) and math.isnan(s.f1) and s.accuracy == 1.0
    s = proposition_scores("x", np.array([1.0, 0.0]), np.array([0.9, 0.1]), np.array([1.0, 1.0]), np.array([0.2, 0.3]))
    assert math.isnan(s.precision) and s.recall == 0.0 and s.f1 == 0.0  # yes labels missed: a real 0


def test_confusion_colours_have_a_bar_and_histogram_counts_are_whole(monkeypatch):
    """The confusion panels say what their colour means; count axes never step by fractions."""
    from types import SimpleNamespace

    from rbrlang.evaluate import plots

    figures = []
    monkeypatch.setattr(plots, "_png", lambda fig: figures.append(fig) or b"")
    c = SimpleNamespace(matrix=np.array([[3, 1], [0, 2]]), classes=("ideal", "bad"), response_type="r",
                        accuracy=5 / 6, n=6)
    plots.confusions([c])
    labels = [ax.get_ylabel() for ax in figures[0].axes]
    assert "share of the row (its human-label class)" in labels
    texts = [t.get_text() for t in figures[0].axes[0].texts]
    assert "3\n75%" in texts and "0\n0%" in texts
    report = SimpleNamespace(rows=[SimpleNamespace(response_type="r")], labels={"r": ("ideal", "bad")},
                             centred={("RBR", "r"): (np.array(["ideal", "bad", "bad"]), np.array([0.5, -0.2, -0.3]))})
    plots.reward_histograms(report, ["RBR"])
    ticks = figures[1].axes[0].get_yticks()
    assert len(ticks) and all(float(t).is_integer() for t in ticks)
    for fig in figures:
        plots._pyplot().close(fig)
