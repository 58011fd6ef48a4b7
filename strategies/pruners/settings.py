"""Every pruning option in one place, checked once: the CLI (generate --prune, tts prune) and a
notebook build the same object."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# Step markers that start a new reasoning move (methods.md §4 names wait/thus/so/since/therefore;
# the rest are the same kind of marker in the small models' outputs).
REASONING_WORDS = ("wait", "thus", "so", "since", "therefore", "hence", "but", "then", "because",
                   "alternatively", "first", "next", "now")


@dataclass
class Prefix:
    """What a DeepPrune judge sees of a trace: the first K tokens, or the text up to (and
    including) the K-th reasoning word."""

    kind: str = "words"   # words | tokens
    k: int = 25
    words: tuple[str, ...] = REASONING_WORDS

    @classmethod
    def parse(cls, spec: str, words: tuple[str, ...] | None = None) -> "Prefix":
        kind, sep, k = spec.partition(":")
        if not sep or kind not in ("words", "tokens") or not k.isdigit() or int(k) < 1:
            raise ValueError(f"--prefix {spec!r}: expected words:K or tokens:K with K >= 1")
        return cls(kind, int(k), tuple(words) if words else REASONING_WORDS)

    @property
    def pattern(self) -> re.Pattern:
        # a word counts only once the next character exists: while "so" is the last thing
        # generated it may still grow into "some"
        alts = "|".join(re.escape(w) for w in sorted(self.words, key=len, reverse=True))
        return re.compile(rf"\b(?:{alts})\b(?=\W)", re.IGNORECASE)

    def cut(self, text: str) -> str | None:
        """The text up to the end of the K-th reasoning word; None when it has fewer."""
        for n, m in enumerate(self.pattern.finditer(text), start=1):
            if n == self.k:
                return text[: m.end()]
        return None

    def __str__(self) -> str:
        return f"{self.kind}:{self.k}"


@dataclass
class PruneSettings:
    method: str = "deepprune"           # deepprune | deepconf
    # DeepPrune
    judge: str = "ngram"
    prefix: Prefix = field(default_factory=Prefix)
    k1: int = 10                        # random members a new trace is compared with, per cluster
    tau: float = 0.5                    # joins the best cluster when its mean score exceeds this
    max_clusters: int = 32
    k2: int = 0                         # survivors of the largest cluster (0: all of them)
    survivors: str = "largest"          # largest | representatives
    ngram: int = 3                      # n of the ngram judge's word n-grams
    judge_model: str | None = None      # llm: default the generator's model; classifier: required
    judge_labels: str = "1"             # classifier: the label index (or name) meaning "same answer"
    # DeepConf (online)
    warmup: int = 16
    keep: float = 0.9
    window: int = 2048
    consensus: float | None = None
    seed: int = 0

    def validate(self) -> None:
        from strategies.pruners import METHODS
        from strategies.pruners.judges import JUDGES

        if self.method not in METHODS:
            raise ValueError(f"unknown pruning method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.judge not in JUDGES:
            raise ValueError(f"unknown judge {self.judge!r}; choose from {', '.join(JUDGES)}")
        if not 0 < self.keep <= 1:
            raise ValueError(f"--keep {self.keep}: must be in (0, 1]")
        if self.window < 1:
            raise ValueError(f"--window {self.window}: must be >= 1")
        if self.warmup < 1:
            raise ValueError(f"--warmup {self.warmup}: must be >= 1")
        if self.consensus is not None and not 0 < self.consensus <= 1:
            raise ValueError(f"--consensus {self.consensus}: must be in (0, 1]")
        if self.k1 < 1 or self.max_clusters < 1 or self.k2 < 0 or self.ngram < 1:
            raise ValueError("--k1, --max-clusters and --ngram must be >= 1, --k2 >= 0")
        if self.survivors not in ("largest", "representatives"):
            raise ValueError(f"--survivors {self.survivors!r}: choose largest or representatives")
        if self.judge == "classifier" and not self.judge_model:
            raise ValueError("--judge classifier needs --judge-model DIR (a sequence-classification checkpoint)")

    def run_fields(self) -> dict:
        if self.method == "deepconf":
            return {"prune": {"method": "deepconf", "warmup": self.warmup, "keep": self.keep,
                              "window": self.window, "consensus": self.consensus}}
        out = {"method": "deepprune", "judge": self.judge, "prefix": str(self.prefix), "k1": self.k1,
               "tau": self.tau, "max_clusters": self.max_clusters, "k2": self.k2, "survivors": self.survivors,
               "seed": self.seed}
        if self.prefix.kind == "words" and self.prefix.words != REASONING_WORDS:
            out["reasoning_words"] = list(self.prefix.words)
        if self.judge == "ngram":
            out["ngram"] = self.ngram
        if self.judge in ("llm", "classifier"):
            out["judge_model"] = self.judge_model
        return {"prune": out}
