"""A local Hugging Face sequence-classification checkpoint (the released DeepPrune judge is one,
pipeline `text-classification`) scoring two prefixes. The score is the softmax probability of
the label that means "same answer": `--judge-labels` gives its index or its name in the config's
id2label (default index 1).

Input: by default the two prefixes as a text pair (the tokenizer joins them with its own
separator); `--judge-template` gives one text instead, `{a}` and `{b}` standing for the
prefixes, for a checkpoint trained on a prompt format of its own. The released judge's training
template (its LLaMA-Factory data) could not be read, so the pair stays the default
(docs/pruning.md, "Where this differs from the reference").
"""
from __future__ import annotations

import numpy as np

from strategies.pruners.judges import register

BATCH = 8


@register
class ClassifierJudge:
    name = "classifier"

    def __init__(self, settings, loaded=None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = settings.judge_model
        try:
            self.tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True).eval()
        except (OSError, ValueError) as e:
            raise ValueError(f"--judge-model {path!r}: not a local sequence-classification checkpoint ({e})") from None
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model.config.pad_token_id = self.tok.pad_token_id
        self.label = self._label(settings.judge_labels, self.model.config)
        self.template = getattr(settings, "judge_template", None)
        # what the judge costs (the record's `cost.other`): pair tokens read, padding excluded
        self.model_name = f"classifier:{path}"
        from strategies.evaluation.compute import non_embedding_params

        self.params = non_embedding_params(self.model)
        self.tokens = 0

    @staticmethod
    def _label(spec: str, config) -> int:
        names = {str(v).lower(): int(k) for k, v in (config.id2label or {}).items()}
        if spec.isdigit() and int(spec) < config.num_labels:
            return int(spec)
        if spec.lower() in names:
            return names[spec.lower()]
        raise ValueError(f"--judge-labels {spec!r}: not a label index below {config.num_labels} "
                         f"nor one of {', '.join(names)}")

    def score(self, pairs):
        import torch

        out = []
        for at in range(0, len(pairs), BATCH):
            chunk = pairs[at: at + BATCH]
            if self.template is None:
                enc = self.tok([a for a, _ in chunk], [b for _, b in chunk], padding=True, truncation=True,
                               max_length=1024, return_tensors="pt")
            else:
                # replace() rather than format(): a prefix may itself hold braces (LaTeX)
                texts = [self.template.replace("{a}", a).replace("{b}", b) for a, b in chunk]
                enc = self.tok(texts, padding=True, truncation=True, max_length=1024, return_tensors="pt")
            self.tokens += int(enc["attention_mask"].sum())
            with torch.no_grad():
                logits = self.model(**enc).logits.float()
            out.extend(torch.softmax(logits, -1)[:, self.label].tolist())
        return np.array(out)
