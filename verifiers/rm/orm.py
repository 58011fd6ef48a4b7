"""Outcome reward model: a sequence-classification model scores prompt + whole response.

The input is the model's chat template with the response as the assistant turn (how ORMs such as
Skywork-Reward are fed). One label: the reward is its logit (a Bradley-Terry score, any sign).
Two or more labels: the reward is the softmax probability of `label` (default: the last label,
which is the positive one in binary classifiers such as LABEL_0/LABEL_1).
"""
from __future__ import annotations

from typing import Sequence

from verifiers.rm import register
from verifiers.rm.base import RewardInputError, RewardModel, RewardModelError, as_messages


def label_index(config, label, what: str) -> int:
    """A label given as an index or as a name of config.id2label."""
    n = config.num_labels
    if label is None:
        return n - 1
    names = {str(v): int(k) for k, v in (getattr(config, "id2label", None) or {}).items()}
    if str(label) in names:
        return names[str(label)]
    try:
        idx = int(label)
    except (TypeError, ValueError):
        idx = -1
    if not 0 <= idx < n:
        raise RewardModelError(f"{what} {label!r}: the model has labels {', '.join(names) or n}")
    return idx


@register
class SequenceClassifierORM(RewardModel):
    name = "orm"
    kind = "orm"
    architecture = "ForSequenceClassification"
    auto_class = "AutoModelForSequenceClassification"
    defaults = {"label": None, "system": None}

    def setup(self):
        self.n_labels = self.model.config.num_labels
        if self.n_labels == 1:
            if self.opts["label"] not in (None, 0, "0"):
                raise RewardModelError(f"{self.source}: one output (a logit); --label does not apply")
            self.label = 0
        else:
            self.label = label_index(self.model.config, self.opts["label"], "--label")

    def info(self) -> dict:
        out = {"format": self.name, "output": "logit" if self.n_labels == 1 else "probability"}
        if self.n_labels > 1:
            out["label"] = self.label
        if self.opts["system"]:
            out["system"] = self.opts["system"]
        return out

    def encode_item(self, prompt, response: str) -> list[int]:
        text, _ = self.chat(as_messages(prompt), response)
        return self.encode(text, special=False)[0]

    def score(self, items: Sequence[tuple], batch_size: int = 8, on_tokens=None) -> list[float]:
        """One reward per (prompt, response); prompt is a string or a list of chat messages."""
        seqs = []
        for j, (prompt, response) in enumerate(items):
            try:
                seqs.append(self.encode_item(prompt, response))
            except RewardInputError as e:
                e.item = j
                raise
        return self.score_encoded(seqs, batch_size, on_tokens)

    def score_encoded(self, seqs: list[list[int]], batch_size: int = 8, on_tokens=None) -> list[float]:
        def run(ids, mask, rows):
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
            if self.n_labels == 1:
                return logits[:, 0].tolist()
            return logits.softmax(-1)[:, self.label].tolist()

        # the model pools at the last token that is not its pad token: pad with exactly that one
        return self.forward(seqs, batch_size, self.model.config.pad_token_id, run, on_tokens)
