"""SoftCoT-perturbed sampling (`--mode softcot`, methods.md §2.4).

Decoding is ordinary discrete sampling; what differs is the prompt. Each record becomes one
request per chain (`requests`): the assistant reads the question once for all chains (one
batched forward), the projection maps its states into the base embedding space, the chain's
perturbation is applied, and the result is injected at the placeholders that end the base
user turn (Request.inject). A chain's M samples share its prefill; sample indices stay global
(Request.sample_offset), so every sample keeps its own seeded stream.

Perturbations (one per chain c of C = ceil(n / M)):
- none: every chain gets the same thoughts;
- init-tokens (SoftCoT++): chain c writes an initial vector into the assistant's placeholder
  slots: the checkpoint's learned vector c % K when it has K, else embedding row
  len(tok) - 1 - c, or the reference's row under its template (thoughts.init_token_ids); with learned vectors, chains past K repeat a vector and
  differ only by their sampling seeds;
- gaussian: N(0, sigma^2) added to the projected thoughts, seeded by (seed, record id, chain).

Prompt templates (thoughts.py): per side, the reference's for a model family it supports, ours
otherwise (`template="auto"`), or one named; `run.template` says which ran on each side. The
base side's is fixed at construction when the base tokenizer is given, else at the first record
(then `run.template.base` reads "auto": the auto rule on the run's model).
"""
from __future__ import annotations

from dataclasses import asdict, replace

import torch

from strategies.generators.discrete import Discrete
from strategies.generators.params import SoftCoTParams
from strategies.rng import row_rng
from strategies.softcot.projection import Projection
from strategies.softcot.thoughts import (assistant_prompt, assistant_states, base_prompt, init_token_ids,
                                         question_messages, resolve)


class SoftCoT(Discrete):
    name = "softcot"

    def __init__(self, params: SoftCoTParams, assistant, assistant_tokenizer, projection: Projection,
                 assistant_name: str = "", projection_label: str | None = None, template: str = "auto",
                 base_tokenizer=None, raw: bool = False):
        super().__init__(params.sampling)
        self.template = template
        self.assistant_template = resolve(assistant_tokenizer, template)
        self.base_template = None if base_tokenizer is None else resolve(base_tokenizer, template, raw)
        self.sc = params
        self.assistant = assistant
        self.assistant_tok = assistant_tokenizer
        self.projection = projection.to(assistant.device if hasattr(assistant, "device") else "cpu")
        self.assistant_name = assistant_name
        self.label = projection_label or projection.source or projection.kind

    # ----- records -> requests --------------------------------------------------------------
    def chains(self, n: int) -> list[tuple[int, int]]:
        """(sample_offset, samples) of each chain."""
        M = self.sc.per_chain
        return [(o, min(M, n - o)) for o in range(0, n, M)]

    @torch.inference_mode()
    def thoughts(self, question: str, n_chains: int, seed: int, key) -> torch.Tensor:
        """The injected vectors [C, P, d_base] of one prompt's chains."""
        P = self.sc.thoughts
        placed = assistant_prompt(self.assistant_tok, question, P, self.assistant_template)
        init = None
        if self.sc.perturb == "init-tokens":
            learned = self.projection.init
            if learned is not None and len(learned):
                distinct = min(n_chains, len(learned))
                init = learned[:distinct]
            else:
                distinct = n_chains
                table = self.assistant.get_input_embeddings().weight
                ids = torch.tensor(init_token_ids(self.assistant_tok, distinct, self.assistant_template, len(table)))
                init = table[ids.to(table.device)]
        states = assistant_states(self.assistant, placed, init, chains=n_chains)
        # the assistant's forward pass reads the prompt once, or once per distinct init vector
        self.last_assistant_tokens = len(placed.ids) * (1 if init is None else len(init))
        if init is not None and len(init) < n_chains:   # cycle the learned vectors
            states = states[torch.arange(n_chains) % len(init)]
        z = self.projection(states.float())
        if self.sc.perturb == "gaussian" and self.sc.perturb_sigma > 0:
            noise = [torch.from_numpy(row_rng(seed, [key, "softcot-gaussian"], c).standard_normal(z.shape[1:]))
                     for c in range(n_chains)]
            z = z + self.sc.perturb_sigma * torch.stack(noise).to(z.device, z.dtype)
        return z

    def requests(self, req, obj: dict, tokenizer, opts) -> list:
        """One record's requests: one per chain, each with its injected thoughts."""
        messages = question_messages(obj, opts.prompt_field)
        question = messages[-1]["content"]
        if self.base_template is None:
            self.base_template = resolve(tokenizer, self.template, opts.raw)
        placed = base_prompt(tokenizer, messages, self.sc.thoughts, raw=opts.raw, template=self.base_template)
        chains = self.chains(req.n)
        z = self.thoughts(question, len(chains), opts.seed, req.key)
        at = torch.tensor(placed.positions)
        return [replace(req, prompt_ids=placed.ids, n=m, sample_offset=off, inject=(at, z[c]), rows=[],
                        info={"chain": c, "norms": z[c].norm(dim=-1).tolist(),
                              # the record's assistant pass, charged to its first chain only
                              "assistant_tokens": self.last_assistant_tokens if c == 0 else 0})
                for c, (off, m) in enumerate(chains)]

    # ----- output -----------------------------------------------------------------------------
    def sample_fields(self, row, trace: bool) -> dict:
        info = row.req.info
        sc = {"chain": info["chain"], "perturb": self.sc.perturb, "projection": self.label}
        if trace:
            sc["thought_norms"] = [round(v, 4) for v in info["norms"]]
        return {"softcot": sc}

    def cost_other(self, req) -> list[dict]:
        tokens = req.info.get("assistant_tokens", 0)
        if not tokens:
            return []
        if getattr(self, "_assistant_params", None) is None:
            from strategies.evaluation.compute import non_embedding_params

            self._assistant_params = non_embedding_params(self.assistant)
        return [{"role": "assistant", "model": self.assistant_name, "params": self._assistant_params,
                 "tokens": tokens}]

    def run_fields(self) -> dict:
        out = asdict(self.sc.sampling)
        out.update({k: v for k, v in asdict(self.sc).items() if k != "sampling"})
        out.update({"assistant": self.assistant_name, "projection": self.label,
                    "template": {"assistant": self.assistant_template, "base": self.base_template or "auto"}})
        pair = getattr(self.projection, "pair", None)
        if pair is not None:
            out["projection_pair"] = {"assistant": pair.assistant, "base": pair.base}
        return out
