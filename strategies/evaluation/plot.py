"""Accuracy vs K with error bands: the test-time-scaling picture."""
from __future__ import annotations


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
    for label, row in c["methods"].items():
        mean, std = np.array(row["accuracy_mean"]), np.array(row["accuracy_std"])
        line, = ax.plot(ks, mean, marker="o", markersize=3, label=label)
        ax.fill_between(ks, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
        if "ci95_low" in row:
            lo, hi = np.array(row["ci95_low"]), np.array(row["ci95_high"])
            ax.errorbar(ks, mean, yerr=[mean - lo, hi - mean], fmt="none", ecolor=line.get_color(),
                        alpha=0.6, capsize=2, linewidth=0.8)
    ceiling = c.get("oracle_mean") or c["pass_at_k"]  # curves saved before oracle_mean: pass@K
    ax.plot(ks, ceiling, linestyle="--", color="gray",
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
