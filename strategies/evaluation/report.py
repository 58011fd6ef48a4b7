"""Plain-text tables of `summarize` and `curve` results (what `tts eval` prints)."""
from __future__ import annotations


def _fmt(v: float, digits: int = 4) -> str:
    return "-" if v != v else f"{v:.{digits}f}"  # NaN (no data) prints as "-"


def _ci(row: dict, lo: str = "ci95", j: int | None = None) -> str:
    if j is None:
        return f"[{_fmt(row[lo][0])}, {_fmt(row[lo][1])}]" if lo in row else ""
    return f"[{_fmt(row['ci95_low'][j])}, {_fmt(row['ci95_high'][j])}]" if "ci95_low" in row else ""


def summary_table(s: dict) -> str:
    lines = [f"problems {s['problems']}   samples per problem (max) {s['samples']}   "
             f"mean tokens per problem {_fmt(s['tokens'], 1)}", ""]
    width = max([len("method")] + [len(m) for m in s["methods"]])
    boot = s.get("bootstrap")
    head = f"{'method':<{width}}  {'accuracy':>8}"
    if boot:
        head += f"  {'95% CI':^18}"
    head += f"  {'ECE':>6}  {'Brier':>6}  {'tokens':>9}"
    if boot:
        head += f"  {'> ' + boot['baseline']:>10}  {'= ' + boot['baseline']:>10}"
    lines.append(head)
    for label, row in s["methods"].items():
        line = f"{label:<{width}}  {_fmt(row['accuracy']):>8}"
        if boot:
            line += f"  {_ci(row):^18}"
        line += f"  {_fmt(row['ece']):>6}  {_fmt(row['brier']):>6}  {_fmt(row['tokens'], 1):>9}"
        if boot:
            vs = row.get("vs_majority")
            line += (f"  {_fmt(vs['wins'], 3):>10}  {_fmt(vs['ties'], 3):>10}" if vs else f"  {'—':>10}  {'—':>10}")
        lines.append(line)
    if boot:
        b = boot["baseline"]
        if any(row.get("ci95", [0, 1])[0] == row.get("ci95", [0, 1])[1] for row in s["methods"].values()):
            # every problem scored alike: resampling them cannot show any spread
            P = s["problems"]
            lines += ["A zero-width interval: every problem scored the same, and resampling them shows no spread;",
                      f"0 right of {P} has the exact binomial 95% interval [0, {1 - 0.025 ** (1 / P):.4f}]."]
        lines += [f"95% CI: percentile bootstrap over problems ({boot['draws']} draws, seed {boot['seed']}).",
                  f"> {b} / = {b}: share of the same draws in which the method's accuracy is above / equal to",
                  f"{b} voting's (paired). Above 0.975: better than {b} at the 5% level (two-sided);",
                  "the two shares together below 0.025: worse."]
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


def curve_table(c: dict, columns: int | None = None) -> str:
    """The curve as text; with `columns` (the terminal's width), the methods are split over as many
    tables as needed for every line to fit, each repeating K and the oracle, pass@K and tokens."""
    labels = list(c["methods"])
    boot = c.get("bootstrap")
    width = max([31 if boot else 13] + [len(lab) for lab in labels])
    lines = [f"accuracy: mean ± std over {c['repeats']} random subsets per K (seed {c['seed']}), "
             f"{c['problems']} problems.",
             "± is the spread over subset draws on these problems, not uncertainty over problems."]
    if boot:
        lines.append(f"[lo, hi]: 95% bootstrap interval over the {c['problems']} problems ({boot} draws) of the "
                     "accuracy averaged over the subsets.")
    fixed = 5 + (2 + 7) * 2 + 2 + 9   # K, then oracle, pass@K and tokens with their gaps
    per_table = len(labels) if columns is None else max(1, (columns - fixed) // (width + 2))  # "  " + a cell
    for at in range(0, max(len(labels), 1), per_table):
        if at:
            lines.append("")
        lines.extend(_curve_block(c, labels[at: at + per_table], width, boot))
    lines.append("oracle: any of the K correct, on the same subsets as the methods; "
                 "pass@K: its expectation (unbiased estimator)")
    return "\n".join(lines)


def _curve_block(c: dict, labels: list[str], width: int, boot) -> list[str]:
    out = [f"{'K':>5}  " + "  ".join(f"{lab:>{width}}" for lab in labels)
           + f"  {'oracle':>7}  {'pass@K':>7}  {'tokens':>9}"]
    for j, k in enumerate(c["k"]):
        cells = []
        for lab in labels:
            row = c["methods"][lab]
            cell = f"{row['accuracy_mean'][j]:.4f} ± {row['accuracy_std'][j]:.4f}"
            cells.append(cell + (" " + _ci(row, j=j) if boot else ""))
        out.append(f"{k:>5}  " + "  ".join(f"{cell:>{width}}" for cell in cells)
                   + f"  {c['oracle_mean'][j]:>7.4f}  {c['pass_at_k'][j]:>7.4f}  {c['tokens_mean'][j]:>9.1f}")
    return out
