"""What every reward-model format shares: loading (local only), rendering checks, batched forwards.

Batches are right-padded: in a causal model no real token attends to the padding, so a sample's
scores do not depend on what it is batched with (beyond float rounding), and a classifier's
"last non-pad token" pooling finds the real last token.
"""
from __future__ import annotations

import math
from typing import Callable, ClassVar, Sequence

Messages = list  # [{"role": ..., "content": ...}, ...]


class RewardModelError(Exception):
    """The model cannot be used as asked (not found, not a reward model of this kind, bad option)."""


class RewardInputError(ValueError):
    """One item cannot be scored (e.g. longer than the model's context); `item` is its index."""

    def __init__(self, message: str, item: int | None = None):
        super().__init__(message)
        self.item = item


def reduce_steps(scores: Sequence[float], how: str) -> float:
    """One reward from per-step scores: last (search-and-learn's default), min, prod or mean."""
    if not scores:
        raise ValueError("no steps to reduce")
    if how == "last":
        return float(scores[-1])
    if how == "min":
        return float(min(scores))
    if how == "prod":
        return float(math.prod(scores))
    if how == "mean":
        return float(sum(scores) / len(scores))
    raise ValueError(f"unknown reduction {how!r}")


def as_messages(prompt) -> Messages:
    """A record's prompt (a string, or a chat as a list of messages) as a list of messages."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)


def question_of(messages: Messages) -> str:
    """The last user message: what formats without a chat template score against."""
    for m in reversed(messages):
        if m.get("role") == "user":
            return str(m.get("content", ""))
    raise RewardInputError("the prompt has no user message")


class RewardModel:
    """Base class: a loaded reward model of one format. Subclasses set `name`, `kind`,
    `architecture` (the suffix of the transformers class that holds this format) and `auto_class`."""

    name: ClassVar[str]
    kind: ClassVar[str]            # "orm" or "prm"
    architecture: ClassVar[str]    # e.g. "ForSequenceClassification"
    auto_class: ClassVar[str]      # e.g. "AutoModelForSequenceClassification"
    defaults: ClassVar[dict] = {}  # format options and their defaults
    # the suffix of a custom architecture (Python files beside the weights) that holds this format
    remote_architecture: ClassVar[str | None] = None

    def __init__(self, model, tokenizer, source: str, **opts):
        unknown = set(opts) - set(self.defaults)
        if unknown:
            raise RewardModelError(f"{self.name}: unknown option {sorted(unknown)[0]!r}")
        self.model, self.tokenizer, self.source = model, tokenizer, source
        self.opts = {k: (v if opts.get(k) is None else opts[k]) for k, v in self.defaults.items()}
        if not getattr(tokenizer, "is_fast", False):
            raise RewardModelError(f"{source}: needs a fast tokenizer (tokenizer.json) to locate steps")
        self.max_length = context_length(model.config, tokenizer)
        self.setup()

    def setup(self) -> None:
        """Resolve and check format options against the tokenizer (raise RewardModelError)."""

    def info(self) -> dict:
        """What produced the scores, for the records' `score` object."""
        return {"format": self.name, **self.opts}

    # --- shared pieces -------------------------------------------------------------------------

    def single_token(self, text: str, what: str) -> int:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise RewardModelError(f"{self.source}: {what} {text!r} is {len(ids)} tokens in this tokenizer, "
                                   f"not one; is this a {self.name} reward model? "
                                   "(the token is an option: --tag, --good, --bad)")
        return ids[0]

    def chat(self, messages: Messages, response: str) -> tuple[str, int]:
        """The chat template applied to messages + the response as the assistant turn, and where
        the response starts in that text (-1 if the template did not keep it verbatim)."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise RewardModelError(f"{self.source}: the tokenizer has no chat template")
        system = self.opts.get("system")
        if system and not (messages and messages[0].get("role") == "system"):
            messages = [{"role": "system", "content": system}, *messages]
        text = self.tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": response}],
                                                  tokenize=False)
        return text, text.rfind(response)   # -1: the template changed it (some trim whitespace)

    def encode(self, text: str, special: bool, marks: Sequence[int] = ()) -> tuple[list[int], list[int]]:
        """Token ids of `text`, and the token holding each character position in `marks`."""
        enc = self.tokenizer(text, add_special_tokens=special)
        ids = enc["input_ids"]
        if len(ids) > self.max_length:
            raise RewardInputError(f"{len(ids)} tokens, longer than the reward model's context ({self.max_length})")
        pos = [enc.char_to_token(c) for c in marks]
        if any(p is None for p in pos) or len(set(pos)) != len(pos):
            raise RewardInputError("the step tags do not fall on distinct tokens")
        return ids, pos

    def forward(self, seqs: list[list[int]], batch_size: int, pad_id: int | None,
                run: Callable, on_tokens: Callable[[int], None] | None = None) -> list:
        """run(input_ids, attention_mask, rows) -> one result per row, over right-padded batches of
        similar length (longest first); results in the order of `seqs`. pad_id None: batches of one."""
        import torch

        if pad_id is None:
            batch_size = 1
        order = sorted(range(len(seqs)), key=lambda j: (-len(seqs[j]), j))
        out: list = [None] * len(seqs)
        device = self.model.device
        for b in range(0, len(order), batch_size):
            rows = order[b:b + batch_size]
            width = max(len(seqs[j]) for j in rows)
            ids = torch.full((len(rows), width), pad_id if pad_id is not None else 0, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, j in enumerate(rows):
                ids[r, :len(seqs[j])] = torch.tensor(seqs[j], dtype=torch.long)
                mask[r, :len(seqs[j])] = 1
            with torch.inference_mode():
                results = run(ids.to(device), mask.to(device), rows)
            for j, res in zip(rows, results):
                out[j] = res
            if on_tokens is not None:
                on_tokens(int(sum(len(seqs[j]) for j in rows)))
        return out


def context_length(config, tokenizer) -> int:
    n = getattr(config, "max_position_embeddings", None)
    t = getattr(tokenizer, "model_max_length", None)
    sane_t = t if isinstance(t, int) and 0 < t < 10 ** 7 else None
    return min(x for x in (n, sane_t, 10 ** 9) if x)


def locate(name: str) -> str:
    """A local model directory, or a hub id whose config is in the local cache (nothing is downloaded)."""
    from strategies.models import ModelNotFound, resolve

    try:
        kind, loc = resolve(name)
    except ModelNotFound as e:
        raise RewardModelError(str(e)) from None
    if kind not in ("dir", "hub"):
        raise RewardModelError(f"reward model {name!r}: give a Hugging Face model directory or a hub id in the "
                               "local cache (GGUF files and tiny-random are policy models)")
    return str(loc)


def config_json(loc: str) -> dict:
    """The model's config.json as data (no code runs: a custom architecture is named, not loaded)."""
    import json
    import os

    path = os.path.join(loc, "config.json")
    if not os.path.isdir(loc):
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(loc, "config.json")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, TypeError, ValueError) as e:
        raise RewardModelError(f"{loc}: cannot read its config.json ({e})") from None


def pick_format(name: str, config: dict, kind: str | None) -> type:
    """The format class for a model's config.json: by the suffix of its architecture's name."""
    from verifiers.rm import KINDS, REGISTRY

    if kind is not None and kind not in KINDS:
        raise RewardModelError(f"unknown reward-model kind {kind!r}; choose from {', '.join(KINDS)}")
    arch = (config.get("architectures") or ["(none)"])[0]
    fits = [cls for cls in REGISTRY.values() if arch.endswith(cls.architecture)
            or (cls.remote_architecture and arch.endswith(cls.remote_architecture))]
    if not fits:
        known = "; ".join(f"{c.name}: *{c.architecture}" for c in REGISTRY.values())
        raise RewardModelError(f"{name}: a {arch} is not a reward model tts score reads ({known})")
    cls = fits[0]
    if kind is not None and cls.kind != kind:
        article = "an" if kind == "orm" else "a"
        raise RewardModelError(f"{name}: a {arch} is a {cls.kind.upper()} of format {cls.name}, "
                               f"not {article} {kind.upper()}")
    return cls


def load_reward_model(name: str, kind: str | None = None, device: str = "auto", dtype: str = "auto",
                      trust_remote_code: bool = False, **opts) -> RewardModel:
    """Load a reward model from a local directory or the local Hugging Face cache (never a hub).

    The format follows from the config's architecture; `kind` ("orm" or "prm"), when given, must
    agree with it. `opts` are the format's options (see each format's `defaults`). A checkpoint
    whose architecture ships as Python files beside its weights (Qwen2.5-Math-PRM's
    Qwen2ForProcessRewardModel) loads only with `trust_remote_code`, which runs those files."""
    from strategies.models import ModelNotFound, _quiet_transformers, pick_device, pick_dtype

    try:
        device = pick_device(device)
        torch_dtype = pick_dtype(dtype, device, sampler=False)
    except ModelNotFound as e:
        raise RewardModelError(str(e)) from None
    loc = locate(name)
    config = config_json(loc)
    cls = pick_format(name, config, kind)
    arch = (config.get("architectures") or [""])[0]
    remote = bool(cls.remote_architecture) and arch.endswith(cls.remote_architecture)
    if remote and not trust_remote_code:
        raise RewardModelError(f"{name}: {arch} is defined by Python files that ship with the checkpoint; "
                               "--trust-remote-code runs them (read them first)")
    _quiet_transformers()
    import transformers
    from transformers import AutoTokenizer

    auto = getattr(transformers, "AutoModel" if remote else cls.auto_class)
    model = auto.from_pretrained(loc, dtype=torch_dtype, local_files_only=True,
                                 trust_remote_code=remote).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(loc, local_files_only=True, trust_remote_code=remote)
    return cls(model, tokenizer, name, **opts)
