"""Warnings `tts generate` gives once, up front, on stderr, about settings that run but are
probably not what the user meant."""
from __future__ import annotations

import sys

from strategies.generators.params import SoftParams


def warn(msg: str) -> None:
    print(f"tts: warning: {msg}", file=sys.stderr)


def has_marker(tokenizer, text: str) -> bool:
    """Whether the tokenizer knows `text` as a token of its own, or its chat template mentions it."""
    try:
        if text in tokenizer.get_vocab() or text in getattr(tokenizer, "all_special_tokens", ()):
            return True
    except (AttributeError, NotImplementedError):
        return True  # cannot tell: stay silent rather than warn wrongly
    return text in str(getattr(tokenizer, "chat_template", None) or "")


def soft_mode(tokenizer, params: SoftParams, n: int) -> None:
    """--mode soft pitfalls: N identical thinking chains; a think-end string the model never writes."""
    if n > 1 and params.noise == "none":
        warn(f"--mode soft with --noise none makes the {n} samples' thinking chains identical "
             "(concept tokens are deterministic without noise); use --noise gumbel for different samples")
    if params.think_end == SoftParams.think_end and not params.soft_budget and not has_marker(tokenizer, params.think_end):
        warn(f"the model has no {params.think_end!r} marker (not one of its tokens, not in its chat template) "
             "and --soft-budget is 0: thinking ends only by Cold Stop, EOS or --max-new-tokens; for models "
             "without thinking markers set --think-end (e.g. $'\\nThe final answer is') and --soft-budget N")
