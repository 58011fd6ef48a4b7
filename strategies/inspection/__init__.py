"""Looking at traces: per-sample signals and their AUROC, figures, and the HTML trace report.

    from strategies.inspection import labelled_signals, signal_aurocs, plot_signals, render_report
    table = labelled_signals(records, window=2048)   # per sample: correct?, the four signals
    signal_aurocs(table)                            # {"confidence": 0.61, ...}
    plot_signals(table, "fig.png")
    html = render_report(records, tokenizer, color="confidence")

The modules import numpy, matplotlib and Jinja2 lazily where they can, so that `tts --help`
stays fast.
"""
from strategies.inspection.signals import (
    SIGNALS, SignalTable, auroc, labelled_signals, sample_signals, signal_aurocs,
)

__all__ = ["SIGNALS", "SignalTable", "auroc", "labelled_signals", "sample_signals", "signal_aurocs",
           "plot_signals", "plot_trace", "render_report"]


def __getattr__(name):
    # The heavy halves (matplotlib, Jinja2) load only when asked for.
    if name in ("plot_signals", "plot_trace"):
        from strategies.inspection import plots

        return getattr(plots, name)
    if name == "render_report":
        from strategies.inspection.html import render_report

        return render_report
    raise AttributeError(name)
