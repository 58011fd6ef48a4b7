"""Plain-text tables of `summarize` and `curve` results (what `tts eval` prints)."""
from __future__ import annotations


def _fmt(v: float, digits: int = 4) -> str:
    return "-" if v != v else f"{v:.{digits}f}"  # NaN (no data) prints as "-"


def summary_table(s: dict) -> str:
    lines = [f"problems {s['problems']}   samples per problem (max) {s['samples']}   "
             f"mean tokens per problem {_fmt(s['tokens'], 1)}", ""]
    width = max([len("method")] + [len(m) for m in s["methods"]])
    lines.append(f"{'method':<{width}}  {'accuracy':>8}  {'ECE':>6}  {'Brier':>6}  {'tokens':>9}")
    for label, row in s["methods"].items():
        lines.append(f"{label:<{width}}  {_fmt(row['accuracy']):>8}  {_fmt(row['ece']):>6}  "
                     f"{_fmt(row['brier']):>6}  {_fmt(row['tokens'], 1):>9}")
    cut = s.get("truncated")
    if cut and cut["of"]:
        lines.append(f"cut off by the token limit: {cut['samples']} of {cut['of']} samples "
                     f"({100 * cut['share']:.1f}%)"
                     + ("; their answers may be fragments (see --truncated)" if cut["samples"] else ""))
    lines.append("")
    lines.append(f"single-sample accuracy  {_fmt(s['single_sample_accuracy'])}")
    lines.append("pass@k (unbiased)       " + "  ".join(f"@{k} {_fmt(v)}" for k, v in s["pass_at_k"].items()))
    lines.append(f"oracle (any correct)    {_fmt(s['oracle'])}")
    return "\n".join(lines)


def curve_table(c: dict) -> str:
    labels = list(c["methods"])
    width = max([13] + [len(lab) for lab in labels])
    head = (f"{'K':>5}  " + "  ".join(f"{lab:>{width}}" for lab in labels)
            + f"  {'oracle':>7}  {'pass@K':>7}  {'tokens':>9}")
    lines = [f"accuracy mean ± std over {c['repeats']} random subsets per K (seed {c['seed']}), "
             f"{c['problems']} problems", head]
    for j, k in enumerate(c["k"]):
        cells = [f"{c['methods'][lab]['accuracy_mean'][j]:.4f} ± {c['methods'][lab]['accuracy_std'][j]:.4f}"
                 for lab in labels]
        lines.append(f"{k:>5}  " + "  ".join(f"{cell:>{width}}" for cell in cells)
                     + f"  {c['oracle_mean'][j]:>7.4f}  {c['pass_at_k'][j]:>7.4f}  {c['tokens_mean'][j]:>9.1f}")
    lines.append("oracle: any of the K correct, on the same subsets as the methods; "
                 "pass@K: its expectation (unbiased estimator)")
    return "\n".join(lines)
