"""Evaluation of aggregated pools: the library behind `tts eval`.

    from strategies.evaluation import load_problems, summarize, curve
    problems, skipped = load_problems(records)
    table = summarize(problems)                 # accuracy, ECE, Brier, tokens, pass@k, oracle
    scaling = curve(problems, methods, ks=[1, 2, 4, 8], repeats=10, seed=0)

Answers are compared with gold through `verifiers.equivalent`, the same function the aggregators
use, and every problem's sample answers are grouped into classes once (`Problem.pool`), so a curve
re-aggregates thousands of subsets on integer arrays.
"""
from strategies.evaluation.core import Problem, curve, default_ks, load_problems, summarize

__all__ = ["Problem", "curve", "default_ks", "load_problems", "summarize"]
