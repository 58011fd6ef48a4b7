"""What a run cost: tokens each model processed, and FLOPs from them.

A record of `tts generate` carries its cost in two places: every sample's `n_tokens` (tokens
generated, stopped and pruned samples included) and the record's `cost` object:

    "cost": {"prompt_tokens": 83, "params": 106203648,
             "other": [{"role": "judge", "model": "llm:smollm2-135m", "params": 106203648, "tokens": 5120}]}

`prompt_tokens`: the prompt tokens of the record's requests, each prompt counted once however
many samples share it (the engine prefills a prompt once); `params`: the generator's
non-embedding parameter count; `other`: models other than the generator that read tokens for
this record (the DeepPrune llm/classifier/embedding judge, SoftCoT's assistant), each with its own
non-embedding parameter count and the tokens it read.

FLOPs use the forward-pass approximation 2 × non-embedding parameters per token processed
(Kaplan et al., "Scaling Laws for Neural Language Models"): the embedding lookup is free, and
the output head's 2·d·V per token and attention's 4·layers·d_attn·context per token are left out
(docs/evaluation.md says how large they are for the embedded model).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from strategies.sample_fields import STOPPED

AXES = ("samples", "tokens", "flops")


class CostError(ValueError):
    """A record lacks a field a cost axis needs (older records): the axis is refused."""


# --- parameter counts ------------------------------------------------------------------------

def non_embedding_params(model) -> int:
    """Parameters of a torch model less its embedding tables (every nn.Embedding: token,
    position, token-type) and an untied output head: the weights a token's forward pass
    multiplies by."""
    import torch

    skip = set()
    for m in model.modules():
        if isinstance(m, torch.nn.Embedding):
            skip.update(id(p) for p in m.parameters())
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        skip.update(id(p) for p in head.parameters())
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen and id(p) not in skip:
            total += p.numel()
        seen.add(id(p))
    return int(total)


def params_from_config(config) -> int:
    """Non-embedding parameters of a causal LM from its config alone: the model is built on the
    meta device (no memory, no weights read), so any architecture transformers knows works, and
    a run whose weights sit in another engine (vLLM) is counted the same way."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return non_embedding_params(model)


# --- per-record costs ------------------------------------------------------------------------

@dataclass
class RecordCost:
    """One record's cost, read from its fields. None: the record lacks what that part needs."""

    generated: float                       # Σ n_tokens over the samples, stopped ones included
    per_sample: np.ndarray                 # n_tokens of the samples that vote, in pool order
    prompt_tokens: float | None = None
    params: float | None = None
    other: list = field(default_factory=list)   # [(role, params, tokens)]
    started: int = 0                       # samples started (skipped ones never were)
    missing: str | None = None             # the first field flops would need and lacks

    @property
    def other_flops(self) -> float:
        return float(sum(2.0 * p * t for _, p, t in self.other))

    def flops(self, generated: float | None = None) -> float:
        """2·N·(prompt + generated) for the generator plus each other model's 2·N_m·tokens_m;
        `generated` replaces the record's own generated tokens (a subset's)."""
        g = self.generated if generated is None else generated
        return 2.0 * self.params * (self.prompt_tokens + g) + self.other_flops


def record_cost(rec: dict) -> RecordCost:
    """The cost fields of one record (`tts generate` output, aggregated or not)."""
    samples = rec.get("samples") or []
    missing = None
    tokens = []
    for s in samples:
        n = s.get("n_tokens")
        if not isinstance(n, (int, float)):
            missing = missing or "samples[].n_tokens"
            n = math.nan
        tokens.append(float(n))
    voting = np.array([t for t, s in zip(tokens, samples) if s.get("finish") not in STOPPED], dtype=float)
    c = rec.get("cost")
    out = RecordCost(generated=float(sum(tokens)), per_sample=voting,
                     started=len(samples), missing=missing)
    if not isinstance(c, dict):
        out.missing = missing or "cost"
        return out
    for name in ("prompt_tokens", "params"):
        v = c.get(name)
        if isinstance(v, (int, float)):
            setattr(out, name, float(v))
        else:
            out.missing = out.missing or f"cost.{name}"
    for o in c.get("other") or []:
        if not isinstance(o.get("params"), (int, float)) or not isinstance(o.get("tokens"), (int, float)):
            out.missing = out.missing or "cost.other[].params/tokens"
            continue
        out.other.append((str(o.get("role", "")), float(o["params"]), float(o["tokens"])))
    return out


def is_pruned(rec: dict) -> bool:
    """Whether an online (or replayed) pruner shaped this record: its samples cannot be
    subsampled into a K-sample run of the same pruner."""
    return bool(rec.get("skipped")) or any(s.get("finish") in STOPPED for s in rec.get("samples") or [])


def require(costs: list[RecordCost], x: str, where: str) -> None:
    """Refuse axis `x` with one line naming the first missing field (CostError)."""
    if x == "samples":
        return
    for j, c in enumerate(costs):
        need = c.missing if x == "flops" else ("samples[].n_tokens" if c.missing == "samples[].n_tokens" else None)
        if need:
            raise CostError(f"--x {x}: {where} problem {j + 1} has no `{need}` "
                            f"(a record from an older `tts generate`); use --x samples"
                            + ("" if x == "tokens" else " or --x tokens"))
    if x == "flops":
        params = {c.params for c in costs}
        if len(params) > 1:
            raise CostError(f"--x flops: {where} mixes generators of {len(params)} sizes; one run, one model")


def total(costs: list[RecordCost], x: str) -> float:
    """Mean cost per problem of whole records along axis x."""
    if x == "samples":
        return float(np.mean([c.started for c in costs]))
    if x == "tokens":
        return float(np.mean([c.generated for c in costs]))
    return float(np.mean([c.flops() for c in costs]))


def breakdown(costs: list[RecordCost]) -> dict:
    """Mean tokens per problem, by who processed them (what --json reports beside the axis)."""
    out = {"generated": float(np.mean([c.generated for c in costs]))}
    if all(c.prompt_tokens is not None for c in costs):
        out["prompt"] = float(np.mean([c.prompt_tokens for c in costs]))
    roles = sorted({r for c in costs for r, _, _ in c.other})
    for role in roles:
        out[role] = float(np.mean([sum(t for r, _, t in c.other if r == role) for c in costs]))
    return out


def subset_cost(costs: list[RecordCost], x: str, k: int, generated_mean: float) -> float:
    """Mean cost per problem of K-subsets whose generated tokens average `generated_mean` per
    problem: the prompt (prefilled whatever K) and the other models' tokens are charged whole."""
    if x == "samples":
        return float(np.mean([min(k, c.per_sample.size) for c in costs]))
    if x == "tokens":
        return generated_mean
    n = costs[0].params
    fixed = np.mean([2.0 * c.params * c.prompt_tokens + c.other_flops for c in costs])
    return float(fixed + 2.0 * n * generated_mean)


# --- the Pareto frontier ---------------------------------------------------------------------

def pareto(cost, accuracy) -> np.ndarray:
    """Indices of the points no other point dominates (cost no higher and accuracy no lower, one
    of them strictly), by increasing cost. Equal points are all kept."""
    # means of the same credits summed in another order differ in the last bits: not a gain
    cost = np.round(np.asarray(cost, dtype=float), 9)
    accuracy = np.round(np.asarray(accuracy, dtype=float), 12)
    order = np.lexsort((-accuracy, cost))   # by cost, then best accuracy first
    keep, best, best_cost = [], -math.inf, None
    for i in order:
        a = accuracy[i]
        if a > best or (a == best and cost[i] == best_cost):
            keep.append(int(i))
            if a > best:
                best, best_cost = a, cost[i]
    return np.array(keep, dtype=int)
