"""Figures of per-sample signals: correct vs incorrect distributions, and signals over a trace."""
from __future__ import annotations

import numpy as np

from strategies.inspection.signals import LABELS, SIGNALS, SignalTable, signal_aurocs

CORRECT, WRONG, UNKNOWN = "#1a7f37", "#cf222e", "#8c959f"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_signals(table: SignalTable, path: str, title: str | None = None, bins: int = 30) -> dict:
    """One panel per signal: histograms (each side normalised to density, since right traces are
    usually the minority) of correct and incorrect samples, the AUROC in the legend. Returns the
    AUROCs."""
    plt = _pyplot()
    aurocs = signal_aurocs(table)
    fig, axes = plt.subplots(2, 2, figsize=(8.8, 6.2), dpi=110)
    for ax, name in zip(axes.flat, SIGNALS):
        v = table.values[name]
        ok = ~np.isnan(v)
        right, wrong = v[ok & table.correct], v[ok & ~table.correct]
        ax.set_title(LABELS[name] + (f"  (window {table.window})" if name == "min_window_confidence" else ""),
                     fontsize="medium")
        if not ok.any():
            ax.text(0.5, 0.5, "no data (needs tts generate --trace)" if name == "min_window_confidence"
                    else "no data", ha="center", va="center", transform=ax.transAxes, color=UNKNOWN)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        edges = np.histogram_bin_edges(v[ok], bins=bins)
        for values, colour, label in ((wrong, WRONG, "incorrect"), (right, CORRECT, "correct")):
            if values.size:
                ax.hist(values, bins=edges, density=True, color=colour, alpha=0.35, label=f"{label} (n={values.size})")
                ax.hist(values, bins=edges, density=True, color=colour, histtype="step", linewidth=1.2)
        a = aurocs[name]
        ax.legend(title=f"AUROC {a:.3f}" if a is not None else "AUROC n/a", fontsize="small",
                  title_fontsize="small", loc="upper left")
        ax.set_ylabel("density", fontsize="small")
        ax.tick_params(labelsize="small")
        ax.grid(True, alpha=0.25)
    n_right = int(table.correct.sum())
    fig.suptitle(title or f"Correct vs incorrect traces: {table.size} samples "
                          f"({n_right} correct) from {table.problems} problems", fontsize="medium")
    fig.text(0.5, 0.005, "AUROC: chance that a correct sample has the higher value (ties half); 0.5 = no separation",
             ha="center", fontsize="x-small", color="#57606a")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return aurocs


def moving_average(values: np.ndarray, width: int) -> np.ndarray:
    """Trailing mean over up to `width` tokens (the first tokens average what there is), so a
    curve starts at token 0 and each point only sees the past, as an online stopper would."""
    values = np.asarray(values, dtype=np.float64)
    if width <= 1 or values.size == 0:
        return values
    cs = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(1, values.size + 1)
    lo = np.maximum(idx - width, 0)
    return (cs[idx] - cs[lo]) / (idx - lo)


def plot_trace(series: list[tuple[object, np.ndarray, bool | None]], path: str, signal: str,
               smooth: int = 1, title: str | None = None) -> None:
    """A signal over token position for each sample: (sample index, per-token values, correct or
    None when unknown), green for correct, red for incorrect, grey without a gold answer."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 4.2), dpi=110)
    counts = {True: 0, False: 0, None: 0}
    # incorrect first so the (usually fewer) correct lines are drawn on top
    for i, values, right in sorted(series, key=lambda s: {False: 0, None: 1, True: 2}[s[2]]):
        colour = {True: CORRECT, False: WRONG, None: UNKNOWN}[right]
        counts[right] += 1
        y = moving_average(values, smooth)
        ax.plot(np.arange(y.size), y, color=colour, alpha=0.55, linewidth=1.0)
        if y.size:
            ax.plot([y.size - 1], [y[-1]], marker="o", markersize=2.5, color=colour)
    handles = [plt.Line2D([], [], color=c, label=f"{lab} ({counts[k]})")
               for k, c, lab in ((True, CORRECT, "correct"), (False, WRONG, "incorrect"), (None, UNKNOWN, "no gold"))
               if counts[k]]
    ax.legend(handles=handles, fontsize="small")
    ax.set_xlabel("token position")
    ax.set_ylabel(signal + (f" (trailing mean of {smooth})" if smooth > 1 else ""))
    ax.set_title(title or f"{signal} over the trace, {len(series)} samples", fontsize="medium")
    ax.grid(True, alpha=0.25)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
