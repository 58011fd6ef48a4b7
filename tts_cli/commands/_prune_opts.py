"""Pruning options shared by `tts generate --prune` and `tts prune` (typer needs them declared on
each command; the declarations live here once)."""
from __future__ import annotations

from typing import Optional

import typer

from strategies.jsonl import InputError

PANEL = "Pruning (--prune; docs/pruning.md)"


def opt(default, *names, help: str, panel: str = PANEL, **kw):
    return typer.Option(default, *names, help=help, rich_help_panel=panel, show_default=True, **kw)


JUDGE = opt("ngram", "--judge", help="DeepPrune judge: ngram | embedding | llm | classifier.")
PREFIX = opt("words:25", "--prefix", help="DeepPrune prefix: words:K (text up to the K-th reasoning word) or tokens:K.")
REASONING_WORDS = opt(None, "--reasoning-words", help="Comma-separated reasoning words for --prefix words:K "
                      "[default: wait,thus,so,since,therefore,hence,but,then,because,alternatively,first,next,now].")
K1 = opt(10, "--k1", help="DeepPrune: members of each cluster a new trace is compared with (seeded random choice).")
TAU = opt(0.5, "--tau", help="DeepPrune: a trace joins the best cluster when its mean judge score exceeds this.")
MAX_CLUSTERS = opt(32, "--max-clusters", help="DeepPrune: most clusters per prompt (then traces join the best one).")
K2 = opt(0, "--k2", help="DeepPrune, --survivors largest: traces of the largest cluster finished (0 = all).")
SURVIVORS = opt("largest", "--survivors", help="DeepPrune: largest (finish the largest cluster) | "
                "representatives (one trace per cluster, voting with its cluster size).")
NGRAM = opt(3, "--ngram", help="ngram judge: n of the word n-grams.")
JUDGE_MODEL = opt(None, "--judge-model", help="llm judge: model (default: the generator's); classifier: a local checkpoint dir.")
JUDGE_LABELS = opt("1", "--judge-labels", help="classifier judge: index or name of the label meaning 'same answer'.")
WARMUP = opt(16, "--warmup", help="DeepConf: samples per prompt that run to completion and set the threshold.")
KEEP = opt(0.9, "--keep", help="DeepConf: fraction of warm-up traces the threshold keeps (0.9 high, 0.1 low).")
WINDOW = opt(2048, "--window", help="DeepConf: confidence window in tokens (the whole trace when shorter).")
CONSENSUS = opt(None, "--consensus", help="DeepConf: skip a prompt's remaining samples once the leading answer's "
                "confidence-weighted share reaches this (e.g. 0.95). Default: off.")


def settings(method: str, *, judge, prefix, reasoning_words, k1, tau, max_clusters, k2, survivors, ngram,
             judge_model, judge_labels, warmup, keep, window, consensus, seed) -> "object":
    """PruneSettings from the options, or a one-line InputError."""
    from strategies.pruners.settings import Prefix, PruneSettings

    try:
        words = tuple(w.strip() for w in reasoning_words.split(",") if w.strip()) if reasoning_words else None
        s = PruneSettings(method=method, judge=judge, prefix=Prefix.parse(prefix, words), k1=k1, tau=tau,
                          max_clusters=max_clusters, k2=k2, survivors=survivors, ngram=ngram,
                          judge_model=judge_model, judge_labels=judge_labels, warmup=warmup, keep=keep,
                          window=window, consensus=consensus, seed=seed)
        s.validate()
    except ValueError as e:
        raise InputError(str(e)) from None
    return s


def controller(s, loaded=None):
    from strategies.pruners import build

    try:
        return build(s, loaded)
    except ValueError as e:
        raise InputError(str(e)) from None


Opt = Optional  # re-exported for the commands' annotations
