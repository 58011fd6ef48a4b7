"""Reward models as verifiers: score a response (ORM) or each of its steps (PRM).

Three model formats, one module each, all in one registry keyed by format name:

- `orm` (orm.py): a sequence-classification model scoring prompt + whole response (chat template);
- `prm-tag` (step_tag.py): a causal LM read at a tag token after each step, P(good) over a
  good/bad token pair (the Math-Shepherd convention);
- `prm-token` (token_class.py): a token-classification model read at a separator token after
  each step, P(positive label) (the Qwen2.5-Math-PRM convention).

    from verifiers.rm import load_reward_model
    rm = load_reward_model("path/to/prm")                      # format read from its config
    rm.score_steps([("What is 2+3?", ["2+3=5.", "The answer is 5."])])   # [[p1, p2]]

Models load from a local directory or the local Hugging Face cache only, never from a hub.
The JSONL side (`tts score`) is in verifiers.rm.records.
"""
from __future__ import annotations

REGISTRY: dict[str, type] = {}


def register(cls):
    REGISTRY[cls.name] = cls
    return cls


from verifiers.rm.base import RewardInputError, RewardModel, RewardModelError, load_reward_model, reduce_steps  # noqa: E402,F401
from verifiers.rm import orm, step_tag, token_class  # noqa: E402,F401  (imported for their @register)

KINDS = ("orm", "prm")
REDUCTIONS = ("last", "min", "prod", "mean")

__all__ = ["KINDS", "REDUCTIONS", "REGISTRY", "RewardInputError", "RewardModel", "RewardModelError",
           "load_reward_model", "reduce_steps"]
