"""Process reward model of the step-tag kind (Math-Shepherd): a causal LM read at a tag token.

Each step is followed by the tag (" ки" for Math-Shepherd), steps are joined as the policy wrote
them (`join`, the step separator), and the question comes first, separated by one space
("{question} {step 1} ки\\n\\n{step 2} ки"), as the model card and search-and-learn feed it. At each
tag token the model's next-token logits over the good and bad tokens ("+", "-") are normalised
and P(good) is the step's score. No chat template: the format never saw one.
"""
from __future__ import annotations

from verifiers.rm import register
from verifiers.rm.base import as_messages, question_of
from verifiers.rm.prm import ProcessRewardModel


@register
class StepTagPRM(ProcessRewardModel):
    name = "prm-tag"
    architecture = "ForCausalLM"
    auto_class = "AutoModelForCausalLM"
    defaults = {"tag": " ки", "good": "+", "bad": "-", "join": "\n\n"}

    def setup(self):
        tag = self.opts["tag"]
        self.tag_id = self.single_token(tag.strip() or tag, "the step tag")
        self.good_id = self.single_token(self.opts["good"], "the good token")
        self.bad_id = self.single_token(self.opts["bad"], "the bad token")

    def info(self) -> dict:
        # `join` is the step separator, which the records' `score` object carries as step_sep
        shown = {k: v for k, v in self.opts.items() if k != "join"}
        return {"format": self.name, **shown, "tag_id": self.tag_id, "good_id": self.good_id, "bad_id": self.bad_id}

    def encode_item(self, prompt, steps):
        tag, join = self.opts["tag"], self.opts["join"]
        text = question_of(as_messages(prompt)) + " "
        marks = []
        for k, step in enumerate(steps):
            text += (join if k else "") + step + tag
            marks.append(len(text) - 1)  # the tag's last character: its (last) token is read
        return self.encode(text, special=True, marks=marks)

    def score_encoded(self, encoded, batch_size=8, on_tokens=None):
        import torch

        pair = [self.good_id, self.bad_id]

        def run(ids, mask, rows):
            # logits only where they are read: (B, positions, vocab) rather than (B, T, vocab)
            keep = sorted({p for j in rows for p in encoded[j][1]})
            logits = self.model(input_ids=ids, attention_mask=mask,
                                logits_to_keep=torch.tensor(keep, device=ids.device)).logits
            where = {p: k for k, p in enumerate(keep)}
            out = []
            for r, j in enumerate(rows):
                at = [where[p] for p in encoded[j][1]]
                out.append(logits[r, at][:, pair].float().softmax(-1)[:, 0].tolist())
            return out

        return self.forward([e[0] for e in encoded], batch_size, self.tokenizer.pad_token_id or 0, run, on_tokens)
