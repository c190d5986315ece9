"""`report.html` and its PNG plots: one self-contained page (the plots are
embedded as base64 and also written beside it), readable offline.

The report folder is replaced whole (a fresh sibling, then a rename), and only
when it is missing, empty, or a report this module wrote: a folder holding
anything else is refused, so no user file is ever deleted.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Iterable, Optional

from .._version import __version__
from ..files import check_output_folder, replace_folder
from . import plots
from .evaluation import Evaluation
from .rewards import KINDS

REPORT_FILE = "report.html"
GENERATOR = "rbrc eval"  # <meta name="generator">: how a folder is recognised as an earlier report
PLOTS = ("reliability.png", "reliability_by_proposition.png", "confusion.png", "error_rates.png",
         "reward_histograms.png")
OURS = frozenset((REPORT_FILE,) + PLOTS)

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f3f3; }
.note { color: #555; font-size: 13px; } .warn { color: #a04000; }
img { max-width: 100%; border: 1px solid #eee; }
.big { font-size: 1.3em; font-weight: 600; }
"""


def is_report(folder: Path) -> bool:
    """A folder holding only what `write_report` writes, with our report.html."""
    try:
        names = {p.name for p in Path(folder).iterdir()}
        head = (Path(folder) / REPORT_FILE).read_text(encoding="utf-8", errors="replace")[:2000]
    except OSError:
        return False
    return names <= OURS and f'<meta name="generator" content="{GENERATOR}' in head


def check_report_folder(folder, inputs: Iterable = (), option: str = "`folder`") -> Path:
    """Refuse a report folder we may not replace, before any slow work.
    `option`: what the messages call the folder (the CLI: its flag)."""
    return check_output_folder(folder, option, "an earlier `rbrc eval` report", is_report,
                               [Path(p) for p in inputs])


def write_report(evaluation: Evaluation, folder, inputs: Iterable = ()) -> Path:
    """Write FOLDER/report.html and the PNGs; returns the report path."""
    out = check_report_folder(folder, inputs)
    images = render_plots(evaluation)
    page = render_html(evaluation, images)

    def fill(tmp: Path) -> None:
        for name, data in images.items():
            (tmp / name).write_bytes(data)
        (tmp / REPORT_FILE).write_text(page, encoding="utf-8")

    replace_folder(out, fill)
    return Path(folder) / REPORT_FILE


def render_plots(ev: Evaluation) -> dict[str, bytes]:
    images = {}
    g = ev.gold
    if g is not None:
        if len(g.y):
            images["reliability.png"] = plots.reliability(g.y, g.p_raw, g.p_cal)
            images["reliability_by_proposition.png"] = plots.reliability_grid(g.by_proposition)
        if g.confusions:
            images["confusion.png"] = plots.confusions(g.confusions)
    r = ev.rewards
    if r is not None and r.rows:
        images["error_rates.png"] = plots.error_rates(r.rows, KINDS)
        if r.centred:
            images["reward_histograms.png"] = plots.reward_histograms(r, KINDS)
    return images


# --- HTML -------------------------------------------------------------------------------------


def _e(x) -> str:
    return html.escape(str(x))


def _f(v: Optional[float], pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.1%}" if pct else f"{v:.3f}"


def _table(head: list, rows: list) -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _img(images: dict, name: str, alt: str) -> str:
    if name not in images:
        return ""
    data = base64.b64encode(images[name]).decode("ascii")
    return f'<p><img src="data:image/png;base64,{data}" alt="{_e(alt)}"><br><span class="note">{_e(name)}</span></p>'


def render_html(ev: Evaluation, images: dict) -> str:
    parts = [f"<h1>rbrc eval: policy <code>{_e(ev.policy)}</code></h1>",
             f'<p class="note">compiled folder <code>{_e(ev.folder)}</code> · split seed {ev.seed} · '
             f"rbrlang {_e(__version__)}</p>"]
    if ev.gold is not None:
        parts.append(_gold_html(ev.gold, images))
    if ev.rewards is not None:
        parts.append(_rewards_html(ev.rewards, images))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta name="generator" content="{GENERATOR} (rbrlang {_e(__version__)})">'
            f"<title>rbrc eval: {_e(ev.policy)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def _gold_html(g, images: dict) -> str:
    out = ["<h2>Grader against gold labels</h2>",
           f"<p>{g.rows} gold completions from <code>{_e(g.path)}</code>; P(yes) from {_e(g.source)}; "
           f"the scores use {_e(g.probabilities)}.</p>",
           f'<p class="note">Split by prompt (seed {g.split.seed}): {len(g.split.fit)} rows to fit the '
           f"yes-thresholds{' and the calibration' if g.calibration is not None else ''}, "
           f"{len(g.split.report)} rows to report on. Class accuracy uses every routed row; "
           "the per-proposition scores use the report rows only.</p>"]
    out.append(f'<p class="big">Class accuracy: {_f(g.class_accuracy, True)} '
               f'<span class="note">(report split only: {_f(g.report_accuracy, True)})</span></p>')
    if g.unrouted:
        out.append(f'<p class="note">{g.unrouted} gold lines route to no response type: '
                   "they count in the proposition scores only.</p>")
    rows = [[_e(c.response_type), c.n, _f(c.accuracy, True)] for c in g.confusions]
    out.append(_table(["response type", "completions", "class accuracy"], rows))
    out.append(_img(images, "confusion.png", "confusion matrices"))
    for c in g.confusions:
        head = ["human \\ predicted"] + list(c.classes)
        body = [[_e(c.classes[i])] + [int(v) for v in c.matrix[i]] for i in range(len(c.classes))]
        out.append(f"<details><summary>{_e(c.response_type)}: confusion matrix as a table</summary>"
                   f"{_table(head, body)}</details>")
    out.append("<h3>Per proposition (report split; yes-threshold tuned for F1 on the fit split)</h3>")
    rows = [[f"<code>{_e(s.name)}</code>", s.n, s.positives, _f(s.threshold), _f(s.accuracy), _f(s.precision),
             _f(s.recall), _f(s.f1), _f(s.auroc), _f(s.ece), _f(s.brier)] for s in g.propositions]
    out.append(_table(["proposition", "labels", "yes", "threshold", "accuracy", "precision", "recall", "F1",
                       "AUROC", "ECE", "Brier"], rows))
    out.append('<p class="note">AUROC is – where the report split holds only one label; precision, recall and F1 '
               "are – where they are undefined (no yes prediction, or no yes label).</p>")
    if g.calibration is not None:
        out.append("<h3>Calibration (Platt scaling, fitted on the fit split, scored on the report split)</h3>")
        maps = g.fitted.maps if g.fitted is not None else {}
        rows = []
        for s in g.calibration:
            m = maps.get(s.name)
            rows.append([f"<code>{_e(s.name)}</code>", s.n_fit, s.n_report,
                         _f(m.coef) if m else "–", _f(m.intercept) if m else "–",
                         _f(s.ece_raw), _f(s.ece_calibrated), _f(s.brier_raw), _f(s.brier_calibrated),
                         "" if s.fitted else f'<span class="warn">not fitted: {_e(s.reason)}</span>'])
        out.append(_table(["proposition", "fit rows", "report rows", "coef", "intercept", "ECE raw",
                           "ECE calibrated", "Brier raw", "Brier calibrated", ""], rows))
    out.append("<h3>Reliability</h3>")
    out.append(_img(images, "reliability.png", "reliability diagram"))
    out.append(_img(images, "reliability_by_proposition.png", "reliability per proposition"))
    return "\n".join(out)


def _rewards_html(r, images: dict) -> str:
    out = ["<h2>Rewards on held-out comparisons</h2>",
           f"<p>Comparisons from <code>{_e(r.path)}</code>. Error rate: the fraction of (better, worse) "
           "pairs of one prompt that a reward orders wrongly, ties counted as errors.</p>"]
    rows = [[_e(x.response_type), x.prompts, x.completions, x.pairs, _e(x.rbr_kind)]
            + [_f(x.errors.get(k)) for k in KINDS] for x in r.rows]
    out.append(_table(["response type", "prompts", "completions", "pairs", "RBR reward"]
                      + [f"error {k}" for k in KINDS], rows))
    for note in r.notes:
        out.append(f'<p class="warn">{_e(note)}</p>')
    out.append(_img(images, "error_rates.png", "error rates"))
    out.append("<h3>Per-prompt centred rewards by label</h3>")
    out.append('<p class="note">Each completion\'s reward minus the mean reward of its prompt\'s completions; '
               "a good reward separates the labels, best to the right.</p>")
    out.append(_img(images, "reward_histograms.png", "reward histograms"))
    return "\n".join(out)
