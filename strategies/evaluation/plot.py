"""Accuracy vs K with error bands: the test-time-scaling picture."""
from __future__ import annotations


def plot_curve(c: dict, path: str, title: str | None = None) -> None:
    """Draw mean accuracy ± std per method against K (log-2 axis), with the oracle (any of the K
    correct) on the same random subsets dashed, to `path`.

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
    ceiling = c.get("oracle_mean") or c["pass_at_k"]  # curves saved before oracle_mean: pass@K
    ax.plot(ks, ceiling, linestyle="--", color="gray",
            label="oracle: any of K correct (same subsets)" if "oracle_mean" in c else "pass@K (oracle)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(int(k)) for k in ks])
    ax.set_xlabel("K (samples per problem)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or f"Accuracy vs K ({c['problems']} problems, {c['repeats']} subsets per K)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
