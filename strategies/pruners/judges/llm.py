"""Zero-shot judge: a local causal LM is asked whether two partial solutions will reach the same
final answer; the score is P(yes) / (P(yes) + P(no)) at the answer's first token.

Default model: the generator's own (`loaded`); `--judge-model` names another (alias, directory or
GGUF, as `tts generate --model`).
"""
from __future__ import annotations

import numpy as np

from strategies.pruners.judges import register

QUESTION = ("Here are the beginnings of two solutions to the same problem.\n\n"
            "Solution A:\n{a}\n\nSolution B:\n{b}\n\n"
            "Will the two solutions reach the same final answer? Answer yes or no.")
MAX_PREFIX_CHARS = 2000  # keeps a prompt well inside a small model's context
BATCH = 8


@register
class LLMJudge:
    name = "llm"

    def __init__(self, settings, loaded=None):
        # another engine (vLLM) holding the generator's weights leaves none here: load them
        if settings.judge_model or (loaded is not None and loaded.model is None):
            from strategies.models import load

            loaded = load(settings.judge_model or loaded.name, "cpu", "float32")
        if loaded is None:
            raise ValueError("--judge llm needs a model (--judge-model, or the generator's)")
        self.model, self.tok = loaded.model, loaded.tokenizer
        self.yes = self._first_ids(["yes", "Yes", " yes", " Yes"])
        self.no = self._first_ids(["no", "No", " no", " No"])
        # what the judge costs (the record's `cost.other`): prompt tokens read, padding excluded
        self.model_name = f"llm:{loaded.name}"
        from strategies.evaluation.compute import non_embedding_params

        self.params = non_embedding_params(self.model)
        self.tokens = 0

    def _first_ids(self, words) -> list[int]:
        # every spelling's first token: the answer may start with or without a space or capital
        return sorted({self.tok(w, add_special_tokens=False)["input_ids"][0] for w in words})

    def prompt(self, a: str, b: str) -> list[int]:
        q = QUESTION.format(a=a[:MAX_PREFIX_CHARS], b=b[:MAX_PREFIX_CHARS])
        if getattr(self.tok, "chat_template", None):
            text = self.tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                                tokenize=False)
            return self.tok(text, add_special_tokens=False)["input_ids"]
        return self.tok(q + "\nAnswer:")["input_ids"]

    def score(self, pairs):
        import torch

        out = []
        for at in range(0, len(pairs), BATCH):
            ids = [self.prompt(a, b) for a, b in pairs[at: at + BATCH]]
            self.tokens += sum(map(len, ids))
            L = max(map(len, ids))
            # left padding: every prompt's last token sits at the same position
            x = torch.tensor([[0] * (L - len(i)) + i for i in ids], device=self.model.device)
            mask = torch.tensor([[0] * (L - len(i)) + [1] * len(i) for i in ids], device=self.model.device)
            pos = (mask.cumsum(1) - 1).clamp(min=0)
            with torch.no_grad():
                # only the last position's logits: the output head over every prompt position
                # would cost a fifth of the forward for nothing
                logits = self.model(input_ids=x, attention_mask=mask, position_ids=pos,
                                    logits_to_keep=1).logits[:, -1].float()
            logp = torch.log_softmax(logits, -1)
            yes = torch.logsumexp(logp[:, self.yes], -1)
            no = torch.logsumexp(logp[:, self.no], -1)
            out.extend(torch.sigmoid(yes - no).tolist())  # P(yes) / (P(yes) + P(no))
        return np.array(out)
