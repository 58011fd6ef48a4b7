"""DeepPrune online (methods.md §4): once every row of a prompt has reached its prefix (or
finished), cluster the prefixes greedily with a judge and stop the rows that will not finish.

While a prompt waits for its slowest row to reach the prefix, its faster rows keep decoding
(the seam has no pause); with all of a prompt's rows in the batch together that wait is short.
Non-survivors that had already finished by then are marked `pruned` as well, so that the vote
is over the survivors only whatever the timing.

Which traces finish, by default, is the paper's rule as its pipeline figure draws it (project page
https://deepprune.github.io, figure "Overview of the DeepPrune framework", step 4: c_max = the
largest cluster, q of its traces continue reasoning, the final answer is the majority vote of
their q answers); `--k2` is q, k* = min(|c_max|, K2) with K2 = 20 in the paper (arXiv v1, as a
reading note of it quotes; the paper's own text was not reachable here). `--survivors
representatives` is the paper's other setting (one trace per cluster, reported for pass@k in its
τ table).
"""
from __future__ import annotations

import time

from strategies.aggregators.base import Option
from strategies.control import Controller
from strategies.pruners import register
from strategies.pruners.clustering import greedy_clusters, survivors
from strategies.pruners.settings import REASONING_WORDS, Prefix
from strategies.sample_fields import PRUNED
from strategies.rng import row_rng


class _Prompt:
    def __init__(self, req):
        self.req = req
        self.prefix: dict[int, str] = {}   # sample index -> prefix text, frozen when reached
        self.clusters: list[list[int]] | None = None
        self.cluster_of: dict[int, int] = {}
        self.keep: set[int] = set()
        self.judge_tokens = 0


@register
class DeepPrune(Controller):
    name = "deepprune"
    options = {
        "judge": Option("ngram", str, "judge: ngram (default; word n-gram overlap, not one of the paper's "
                        "judges) | embedding (the paper's sentence-embedding baseline) | llm (the paper's "
                        "zero-shot judge) | classifier (a checkpoint such as the paper's trained judge)."),
        "prefix": Option("words:25", str, "prefix: words:K (text up to the K-th reasoning word) or tokens:K."),
        "reasoning_words": Option(None, str, "comma-separated reasoning words for --prefix words:K "
                                  f"[default: {','.join(REASONING_WORDS)}]."),
        "k1": Option(10, int, "members of each cluster a new trace is compared with (seeded random choice)."),
        "tau": Option(0.5, float, "a trace joins the best cluster when its mean judge score exceeds this."),
        "max_clusters": Option(32, int, "most clusters per prompt (then traces join the best one)."),
        "survivors": Option("largest", str, "largest (default, the paper's rule: the traces of the largest "
                            "cluster finish, up to --k2, and are majority-voted; every other trace stops; if "
                            "every cluster is a single trace, all finish) | representatives (the first trace "
                            "of each cluster finishes, voting with its cluster size: the paper's one-trace-"
                            "per-cluster setting, which it reports for pass@k).",
                            ("largest", "representatives")),
        "k2": Option(20, int, "--survivors largest: the most traces of the largest cluster that finish, "
                     "its first ones (the paper's K2 = 20, see docs/pruning.md; 0 = all)."),
        "ngram": Option(3, int, "ngram judge: n of the word n-grams."),
        "judge_model": Option(None, str, "llm judge: model (default: the generator's); classifier: a "
                              "local checkpoint dir."),
        "judge_labels": Option("1", str, "classifier judge: index or name of the label meaning 'same answer'."),
        "judge_template": Option(None, str, "classifier judge: one input text made from the two prefixes, "
                                 "{a} and {b} marking them [default: the two prefixes as a text pair; the "
                                 "released judge's training template was not found, see docs/pruning.md]."),
    }

    @staticmethod
    def check(s) -> None:
        from strategies.pruners.judges import JUDGES

        if s.judge not in JUDGES:
            raise ValueError(f"unknown judge {s.judge!r}; choose from {', '.join(JUDGES)}")
        if isinstance(s.prefix, str):
            words = s.reasoning_words
            if isinstance(words, str):
                words = tuple(w.strip() for w in words.split(",") if w.strip()) or None
            s.prefix = Prefix.parse(s.prefix, words)
        if s.k1 < 1 or s.max_clusters < 1 or s.k2 < 0 or s.ngram < 1:
            raise ValueError("--k1, --max-clusters and --ngram must be >= 1, --k2 >= 0")
        if s.judge == "classifier" and not s.judge_model:
            raise ValueError("--judge classifier needs --judge-model DIR (a sequence-classification checkpoint)")
        if s.judge_template is not None and ("{a}" not in s.judge_template or "{b}" not in s.judge_template):
            raise ValueError(f"--judge-template {s.judge_template!r}: must contain {{a}} and {{b}}")

    def __init__(self, judge, settings):
        self.judge = judge
        self.s = settings
        self.prompts: dict[int, _Prompt] = {}   # prompts still decoding
        self.done: dict[int, _Prompt] = {}      # finished, until their record is written
        # the judge's wall-clock time over the run, for the closing line on stderr: a time in the
        # records would make the same command's output differ run to run
        self.judge_seconds = 0.0
        self.judged_prompts = 0

    @classmethod
    def from_settings(cls, settings, loaded=None):
        from strategies.pruners.judges import make_judge

        return cls(make_judge(settings, loaded), settings)

    def run_fields(self) -> dict:
        s = self.s
        out = {"method": "deepprune", "judge": s.judge, "prefix": str(s.prefix), "k1": s.k1, "tau": s.tau,
               "max_clusters": s.max_clusters, "k2": s.k2, "survivors": s.survivors, "seed": s.seed}
        if s.prefix.kind == "words" and s.prefix.words != REASONING_WORDS:
            out["reasoning_words"] = list(s.prefix.words)
        if s.judge == "ngram":
            out["ngram"] = s.ngram
        if s.judge in ("llm", "classifier"):
            out["judge_model"] = s.judge_model
        if s.judge == "classifier":
            # which input the judge read: the template, or null for the tokenizer's text pair
            out["judge_template"] = s.judge_template
        return {"prune": out}

    def begin(self, req):
        self.prompts[id(req)] = _Prompt(req)

    def _prefix(self, row, done: bool) -> str | None:
        p = self.s.prefix
        if p.kind == "tokens":
            if len(row.ids) >= p.k or done:
                return self.text(row)  # a row grows one token a step, so this is its first K
            return None
        text = self.text(row)
        cut = p.cut(text)
        return cut if cut is not None else (text if done else None)

    def step(self, rows):
        stops, touched = [], {}
        for r in rows:
            st = self.prompts.get(id(r.req))
            if st is None:
                continue
            if st.clusters is None:
                if r.i not in st.prefix:
                    got = self._prefix(r, False)
                    if got is not None:
                        st.prefix[r.i] = got
                touched[id(r.req)] = st
            elif r.i not in st.keep:  # clustered when an earlier row finished: stop it now
                stops.append((r, PRUNED))
        for st in touched.values():
            if self._ready(st):
                self._cluster(st)
                stops += [(r, PRUNED) for r in st.req.rows if r.finish is None and r.started and r.i not in st.keep
                          and any(r is x for x in rows)]
        return stops

    def finished(self, row):
        st = self.prompts.get(id(row.req))
        if st is None:
            return
        if st.clusters is None:
            if row.i not in st.prefix:
                st.prefix[row.i] = self._prefix(row, True)
            if self._ready(st):
                self._cluster(st)  # still-running non-survivors stop at their next step
        elif row.i not in st.keep:
            row.finish = PRUNED
        if all(r.finish for r in st.req.rows):
            self.done[id(row.req)] = self.prompts.pop(id(row.req))

    @staticmethod
    def _ready(st: _Prompt) -> bool:
        return len(st.prefix) == st.req.n

    def _cluster(self, st: _Prompt) -> None:
        order = sorted(st.prefix)
        texts = [st.prefix[i] for i in order]
        t0 = time.perf_counter()
        tokens0 = getattr(self.judge, "tokens", 0)
        clusters = greedy_clusters(
            len(order), lambda pairs: self.judge.score([(texts[a], texts[b]) for a, b in pairs]),
            k1=self.s.k1, tau=self.s.tau, max_clusters=self.s.max_clusters,
            rng=row_rng(self.s.seed, st.req.key, -1))  # per prompt, independent of the batch
        self.judge_seconds += time.perf_counter() - t0
        self.judged_prompts += 1
        st.judge_tokens += getattr(self.judge, "tokens", 0) - tokens0
        st.clusters = [[order[j] for j in c] for c in clusters]
        st.cluster_of = {i: c for c, members in enumerate(st.clusters) for i in members}
        st.keep = {order[j] for j in survivors(clusters, self.s.survivors, self.s.k2)}
        for r in st.req.rows:
            if r.finish is not None and r.i not in st.keep:
                r.finish = PRUNED  # finished before the clustering, but not a survivor

    def _state(self, req) -> _Prompt | None:
        return self.prompts.get(id(req)) or self.done.get(id(req))

    def sample_fields(self, row) -> dict:
        st = self._state(row.req)
        if st is None or st.clusters is None:
            return {}
        c = st.cluster_of[row.i]
        out = {"cluster": c}
        if row.i in st.keep:
            out["cluster_size"] = len(st.clusters[c])
        return out

    def cost_other(self, req) -> list[dict]:
        """The judge's share of the record's cost (`cost.other`): none for a judge without a model."""
        st = self._state(req)
        if st is None or not hasattr(self.judge, "params"):
            return []
        return [{"role": "judge", "model": self.judge.model_name, "params": self.judge.params,
                 "tokens": st.judge_tokens}]

    def record_fields(self, req) -> dict:
        st = self.done.pop(id(req), None) or self.prompts.pop(id(req), None)
        if st is None or st.clusters is None:
            return {}
        return {"prune": {"clusters": len(st.clusters), "survivors": sorted(st.keep)}}
