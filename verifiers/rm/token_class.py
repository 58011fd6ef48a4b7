"""Process reward model of the token-classification kind (Qwen2.5-Math-PRM): a 2-way head read
at a separator token after each step.

The input is the chat template with the steps as the assistant turn, each step followed by the
separator ("{step 1}<extra_0>{step 2}<extra_0>", as the Qwen2.5-Math-PRM card builds it; a
`system` message can be put first, the card uses one). At each separator the head's logits are
normalised and P(`label`) (default 1, the positive label) is the step's score.
"""
from __future__ import annotations

from verifiers.rm import register
from verifiers.rm.base import RewardInputError, RewardModelError, as_messages
from verifiers.rm.orm import label_index
from verifiers.rm.prm import ProcessRewardModel


@register
class TokenClassPRM(ProcessRewardModel):
    name = "prm-token"
    architecture = "ForTokenClassification"
    auto_class = "AutoModelForTokenClassification"
    remote_architecture = "ForProcessRewardModel"   # Qwen2.5-Math-PRM's own class: the same head, 2 labels
    defaults = {"tag": "<extra_0>", "label": 1, "system": None}

    def setup(self):
        self.tag_id = self.single_token(self.opts["tag"], "the step separator token")
        if getattr(self.model.config, "num_labels", 2) < 2:
            raise RewardModelError(f"{self.source}: a token-classification PRM needs 2 labels, "
                                   f"the model has {self.model.config.num_labels}")
        self.label = label_index(self.model.config, self.opts["label"], "--label")

    def info(self) -> dict:
        out = {"format": self.name, "tag": self.opts["tag"], "tag_id": self.tag_id, "label": self.label}
        if self.opts["system"]:
            out["system"] = self.opts["system"]
        return out

    def encode_item(self, prompt, steps):
        tag = self.opts["tag"]
        response = "".join(step + tag for step in steps)
        text, at = self.chat(as_messages(prompt), response)
        if at < 0:
            raise RewardInputError("the reward model's chat template changes the steps' text; "
                                   "the separators cannot be located")
        marks, end = [], at
        for step in steps:
            end += len(step) + len(tag)
            marks.append(end - 1)
        return self.encode(text, special=False, marks=marks)

    def score_encoded(self, encoded, batch_size=8, on_tokens=None):
        def run(ids, mask, rows):
            out = self.model(input_ids=ids, attention_mask=mask)
            logits = out.logits if hasattr(out, "logits") else out[0]   # custom classes may return a tuple
            probs = logits.float().softmax(-1)
            return [probs[r, encoded[j][1], self.label].tolist() for r, j in enumerate(rows)]

        return self.forward([e[0] for e in encoded], batch_size, self.tokenizer.pad_token_id or 0, run, on_tokens)
