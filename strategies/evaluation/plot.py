"""Accuracy vs K with error bands: the test-time-scaling picture."""
from __future__ import annotations


# Distinct colours for the methods: tab10 without its grey (kept for nothing) and then tab20's
# lighter shades; the oracle is black and dashed, so no method can be mistaken for it.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")
ORACLE_COLOR = "black"
_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v")


def method_styles(methods: dict) -> dict:
    """label -> (colour, legend text, line style, marker): colours distinct (cycling only past
    PALETTE's 18); a method whose curve equals an earlier one's (same means at every K) says so in
    the legend and is drawn dashed with another marker, so both stay visible."""
    import numpy as np

    out, seen = {}, []
    for j, (label, row) in enumerate(methods.items()):
        mean = np.asarray(row["accuracy_mean"], dtype=float)
        same = [other for other, m in seen if m.shape == mean.shape and np.allclose(m, mean, atol=1e-12)]
        text = f"{label} (same as {same[0]})" if same else label
        out[label] = (PALETTE[j % len(PALETTE)], text, _STYLES[len(same) % len(_STYLES)],
                      _MARKERS[len(same) % len(_MARKERS)])
        seen.append((label, mean))
    return out


def plot_curve(c: dict, path: str, title: str | None = None) -> None:
    """Draw mean accuracy per method against K (log-2 axis) with a ±1 std band (the spread over
    subset draws) and, when the curve has them, bars for the 95% interval over problems; the oracle
    (any of the K correct) on the same random subsets dashed; to `path`.

    Not pass@K: that is the oracle's expectation, while the methods are means over a few random
    subsets, so at K = 1 (where every method's accuracy is the oracle's) the two would differ by
    sampling noise and the "ceiling" could sit below the methods."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    import numpy as np

    ks = np.array(c["k"], dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=150)
    styles = method_styles(c["methods"])
    for label, row in c["methods"].items():
        mean, std = np.array(row["accuracy_mean"]), np.array(row["accuracy_std"])
        color, text, style, marker = styles[label]
        line, = ax.plot(ks, mean, marker=marker, markersize=3, label=text, color=color, linestyle=style)
        ax.fill_between(ks, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
        if "ci95_low" in row:
            lo, hi = np.array(row["ci95_low"]), np.array(row["ci95_high"])
            ax.errorbar(ks, mean, yerr=[mean - lo, hi - mean], fmt="none", ecolor=line.get_color(),
                        alpha=0.6, capsize=2, linewidth=0.8)
    ceiling = c.get("oracle_mean") or c["pass_at_k"]  # curves saved before oracle_mean: pass@K
    ax.plot(ks, ceiling, linestyle="--", color=ORACLE_COLOR,
            label="oracle: any of K correct (same subsets)" if "oracle_mean" in c else "pass@K (oracle)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(int(k)) for k in ks])
    bars = "; bars: 95% interval over problems" if any("ci95_low" in r for r in c["methods"].values()) else ""
    ax.set_xlabel(f"K (samples per problem)\nband: ±1 std over subset draws{bars}")
    ax.set_ylabel("accuracy")
    ax.set_title(title or f"Accuracy vs K ({c['problems']} problems, {c['repeats']} subsets per K)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
