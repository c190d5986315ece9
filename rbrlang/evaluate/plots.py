"""The report's figures (matplotlib, Agg backend: no display needed). Each
function returns PNG bytes; the report embeds them and writes them beside it."""
from __future__ import annotations

import io
import math
from typing import Optional, Sequence

import numpy as np

DPI = 100


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: never open a window, never need a display
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    # metadata=Software None: identical inputs give identical bytes (no version stamp)
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _reliability_axes(ax, y, series: Sequence[tuple[str, np.ndarray]], bins: int, title: str) -> None:
    from sklearn.calibration import calibration_curve

    ax.plot([0, 1], [0, 1], ls="--", color="#888888", lw=1, label="perfectly calibrated")
    colours = ("#d62728", "#1f77b4")
    for (name, p), colour in zip(series, colours):
        if not len(y):
            continue
        observed, predicted = calibration_curve(y.astype(int), p, n_bins=bins, strategy="uniform", pos_label=1)
        ax.plot(predicted, observed, marker="o", color=colour, label=name, lw=1.5, ms=4)
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)


def reliability(y: np.ndarray, p_raw: np.ndarray, p_cal: Optional[np.ndarray], bins: int = 10) -> bytes:
    """Observed yes rate against mean P(yes) per bin, pooled over propositions,
    with the histogram of P(yes) below it."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6.5), gridspec_kw={"height_ratios": [3, 1]})
    series = [("raw P(yes)", p_raw)] + ([("calibrated", p_cal)] if p_cal is not None else [])
    _reliability_axes(top, y, series, bins, f"reliability on the report split ({len(y)} labels)")
    top.set_xlabel("mean predicted P(yes)"), top.set_ylabel("observed fraction of yes labels")
    top.legend(loc="upper left", fontsize=8)
    for (name, p), colour in zip(series, ("#d62728", "#1f77b4")):
        bottom.hist(p, bins=bins, range=(0, 1), alpha=0.6, color=colour, label=name)
    bottom.set_xlabel("P(yes)"), bottom.set_ylabel("count"), bottom.set_yscale("log")
    return _png(fig)


def reliability_grid(by_proposition: dict, bins: int = 5) -> bytes:
    """One small reliability panel per proposition."""
    plt = _pyplot()
    names = sorted(by_proposition)
    cols = min(5, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        y, raw, cal = by_proposition[name]
        series = [("raw", raw)] + ([("calibrated", cal)] if cal is not None else [])
        _reliability_axes(ax, y, series, bins, f"{name} (n={len(y)}, yes={int(y.sum())})")
        # Panels are small: ticks at 8 pt stay readable when the page scales the figure down.
        ax.tick_params(labelsize=8)
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _png(fig)


def confusions(items: Sequence) -> bytes:
    """One confusion matrix panel per response type (rows: the class the human labels imply)."""
    plt = _pyplot()
    n = max(1, len(items))
    cols = min(2, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.6 * rows), squeeze=False)
    for ax in axes.flat[len(items):]:
        ax.axis("off")
    for ax, c in zip(axes.flat, items):
        m = c.matrix
        # Colour is the share of the row (of that human-label class), the text the count and
        # that share: rows of very different sizes stay comparable, and the colour bar says so.
        share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(share, cmap="viridis", vmin=0, vmax=1)
        bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label("share of the row (its human-label class)", fontsize=8)
        bar.ax.tick_params(labelsize=7)
        k = len(c.classes)
        ax.set_xticks(range(k), c.classes, rotation=40, ha="right", fontsize=7)
        ax.set_yticks(range(k), c.classes, fontsize=7)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(m[i, j])}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=7,
                        color="black" if share[i, j] > 0.6 else "white")
        ax.set_xlabel("predicted class (highest class probability)", fontsize=8)
        ax.set_ylabel("class of the human labels", fontsize=8)
        ax.set_title(f"{c.response_type}: accuracy {c.accuracy:.1%} (n={c.n})", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def error_rates(rows: Sequence, kinds: Sequence[str]) -> bytes:
    """Grouped bars: error rate per response type for each reward."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1.8 * len(rows) + 2), 3.8))
    width = 0.8 / len(kinds)
    colours = ("#7f7f7f", "#2ca02c", "#9467bd")
    for k, (kind, colour) in enumerate(zip(kinds, colours)):
        values = [r.errors.get(kind) for r in rows]
        xs = [i + (k - (len(kinds) - 1) / 2) * width for i in range(len(rows))]
        bars = ax.bar([x for x, v in zip(xs, values) if v is not None], [v for v in values if v is not None],
                      width=width, color=colour, label=kind)
        # The value on each bar: an error rate of 0 (the best) has no bar to see.
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xticks(range(len(rows)), [r.response_type for r in rows], fontsize=8)
    ax.set_ylabel("pairs ordered wrongly (ties count)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def reward_histograms(report, kinds: Sequence[str], bins: int = 30) -> bytes:
    """Per-prompt centred rewards by label: one row per reward, one panel per response type."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    rts = [r.response_type for r in report.rows]
    shown = [k for k in kinds if any((k, rt) in report.centred for rt in rts)]
    fig, axes = plt.subplots(len(shown), len(rts), figsize=(3.6 * len(rts), 2.8 * len(shown)), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for r, kind in enumerate(shown):
        for c, rt in enumerate(rts):
            ax = axes[r][c]
            if (kind, rt) not in report.centred:
                ax.axis("off")
                continue
            labels, values = report.centred[(kind, rt)]
            span = float(np.abs(values).max()) if len(values) else 1.0
            edges = np.linspace(-span or -1, span or 1, bins + 1)
            for k, lab in enumerate(report.labels[rt]):
                mine = values[labels == lab]
                if len(mine):
                    ax.hist(mine, bins=edges, alpha=0.55, color=cmap(k % 10), label=f"{lab} ({len(mine)})")
            ax.set_title(f"{rt}: {kind}", fontsize=9)
            ax.tick_params(labelsize=8)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: whole numbers, never 0.25 steps
            if c == 0:
                ax.set_ylabel("completions", fontsize=8)
            if r == len(shown) - 1:
                ax.set_xlabel("reward − prompt mean", fontsize=8)
            ax.legend(fontsize=6)
    fig.tight_layout()
    return _png(fig)
