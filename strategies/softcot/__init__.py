"""SoftCoT / SoftCoT++ (methods.md §2.4): soft thoughts from an assistant model, projected into the
base model's input-embedding space and injected at placeholder positions of the base prompt.

- `projection.py` — the projection (linear + bias, optional learned initial vectors), its
  checkpoint formats and the checks a checkpoint must pass against a model pair;
- `thoughts.py`  — the prompts (assistant and base, with placeholders) and the assistant's one
  batched forward that yields a prompt's thoughts for every chain;
- `train.py`     — training the projection (next-token loss + SoftCoT++ contrastive term).
The generator that decodes with them is `strategies/generators/softcot.py`.
"""
