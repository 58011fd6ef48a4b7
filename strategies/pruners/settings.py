"""How a pruner's options become its settings: each pruner declares `options` (name -> Option, as
the aggregators do) and checks them in `check`; `resolve` turns given values into a Settings
object, the same for the CLI (generate --prune, tts prune) and a notebook."""
from __future__ import annotations

import re
from dataclasses import dataclass
from types import SimpleNamespace

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


class Settings(SimpleNamespace):
    """The chosen pruner's option values (its `options`, parsed and checked), with `method` and
    `seed`; built by `resolve`."""


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def owner_of(key: str) -> str | None:
    """The pruning method that declares option `key` (None: no pruner does)."""
    from strategies.pruners import METHODS

    return next((name for name, cls in METHODS.items() if key in cls.options), None)


def resolve(method: str, given: dict | None = None, seed: int = 0) -> Settings:
    """Settings for pruner `method` from `given` option values (strings are parsed; None or
    missing: the default). An option that the method does not declare is refused, naming the
    method it belongs to."""
    from strategies.pruners import METHODS

    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; choose from {', '.join(METHODS)}")
    cls = METHODS[method]
    given = {k: v for k, v in (given or {}).items() if v is not None}
    for key in given:
        if key not in cls.options:
            other = owner_of(key)
            if other is None:
                raise ValueError(f"{method}: unknown option {key!r} (options: {', '.join(cls.options)})")
            raise ValueError(f"{flag(key)} applies to {other} only, not {method}")
    values = {}
    for key, opt in cls.options.items():
        value = given.get(key, opt.default)
        if isinstance(value, str) and opt.parse is not str:
            try:
                value = opt.parse(value)
            except ValueError:
                raise ValueError(f"{flag(key)} {value!r}: not a valid value") from None
        if opt.choices is not None and value not in opt.choices:
            raise ValueError(f"{flag(key)} {value!r}: choose from {', '.join(map(str, opt.choices))}")
        values[key] = value
    s = Settings(method=method, seed=seed, **values)
    cls.check(s)
    return s
