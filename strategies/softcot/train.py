"""Training a SoftCoT projection (`tts softcot train`): base and assistant frozen, the projection
(and with learn_init SoftCoT++'s initial vectors) trained.

Loss per batch = next-token loss on the gold rationale + answer, given the projected thoughts
               + contrastive_weight x SoftCoT++'s InfoNCE over the N perturbed thought sets.

- Prompts are those `tts generate --mode softcot` builds (thoughts.py) from the question in the
  `tts data` boxed template, so a projection is trained on the prompt it will see.
- Each example's assistant pass runs its N chains (initial vectors: learned, or embedding rows
  len(tok) - 1 - i) in one batch; the next-token loss uses one chain per example (chain
  (step + position in batch) mod N), not all N: a base forward and backward per chain would cost
  N times as much on a CPU, while the contrastive term still sees all N.
- The contrastive term (SoftCoT++'s InfoNCE), per example: s_i = the i-th projected thought set
  flattened, t_i = a dropout copy of it (p = 0.5, survivors scaled by 2, a fresh mask per step,
  as the reference's `nn.Dropout(p=0.5)`); logits_ij = cos(s_i, t_j) / tau; loss = cross-entropy
  with target i (a set's positive is its own dropout copy, the copies of the question's other sets
  its negatives), averaged over chains and over the batch. Gradients flow through both sides, as
  in the reference. `positive="self"` is the older variant, t_i = s_i: its diagonal is constantly
  1 / tau, so it only pushes the sets apart and never asks a set to be recognisable under noise.
  Computed per example and averaged, so any batch size works (the reference's version assumes
  batch size 1).
- Templates: the generator's (thoughts.resolve), so the reference's for Llama / Qwen models; the
  reference's template wraps the bare question (Example.question), ours the boxed prompt.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F

from strategies.softcot.projection import Projection
from strategies.softcot.thoughts import TTS, assistant_prompt, assistant_states, base_prompt, init_token_ids, resolve

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass
class Example:
    prompt: str       # the question in the boxed template (what tts data writes)
    rationale: str    # the gold solution, ending in "The answer is \boxed{N}."
    question: str = ""  # the bare question (what the reference's template wraps)


@dataclass
class TrainOptions:
    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 4
    thoughts: int = 4
    chains: int = 4                 # N perturbed thought sets per question (contrastive term)
    learn_init: bool = False
    contrastive_weight: float = 0.1
    temperature: float = 0.05
    positive: str = "dropout"       # InfoNCE positive: "dropout" (the reference's) | "self"
    dropout: float = 0.5            # the positive's dropout probability
    template: str = "auto"          # prompt template (thoughts.TEMPLATES)
    max_target_tokens: int = 192
    seed: int = 0


_CALC = re.compile(r"<<[^>]*>>")


def example_of(obj: dict) -> Example:
    """A training record: `question` + `rationale` (ending in the answer), or GSM8K's `question` +
    `answer` (`... #### N`, calculator annotations <<...>> dropped). ValueError if neither."""
    q = obj.get("question")
    if not isinstance(q, str) or not q.strip():
        raise ValueError("record needs a non-empty 'question'")
    if isinstance(obj.get("rationale"), str) and obj["rationale"].strip():
        rationale = obj["rationale"].strip()
    elif isinstance(obj.get("answer"), str) and "####" in obj["answer"]:
        steps, _, final = obj["answer"].rpartition("####")
        rationale = _CALC.sub("", steps).strip() + f"\nThe answer is \\boxed{{{final.strip().replace(',', '')}}}."
    else:
        raise ValueError("record needs 'rationale', or a GSM8K 'answer' ending in '#### N'")
    return Example(q.strip() + "\n\n" + BOXED_INSTRUCTION, rationale, q.strip())


POSITIVES = ("dropout", "self")


def dropout_copy(z: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """z with each coordinate kept where a uniform draw (torch.rand from `generator`, z's shape,
    on the CPU) is >= p, then scaled by 1 / (1 - p); the rest are zero (nn.Dropout's map)."""
    keep = (torch.rand(z.shape, generator=generator) >= p).to(z.device, z.dtype)
    return z * keep / (1.0 - p)


def contrastive_loss(z: torch.Tensor, temperature: float = 0.05, positive: str = "dropout", p: float = 0.5,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """SoftCoT++'s InfoNCE over N thought sets per example: z [B, N, P, D] -> a scalar."""
    if positive not in POSITIVES:
        raise ValueError(f"positive must be one of {POSITIVES}")
    B, N = z.shape[:2]
    student = F.normalize(z.reshape(B, N, -1), dim=-1)
    teacher = student if positive == "self" else F.normalize(dropout_copy(z, p, generator).reshape(B, N, -1), dim=-1)
    logits = student @ teacher.transpose(1, 2) / temperature      # [B, N, N]
    target = torch.arange(N, device=z.device).repeat(B)
    return F.cross_entropy(logits.reshape(B * N, N), target)


class Trainer:
    def __init__(self, base, base_tok, assistant, assistant_tok, projection: Projection, opts: TrainOptions):
        self.base, self.btok = base, base_tok
        self.assistant, self.atok = assistant, assistant_tok
        self.proj = projection
        self.opts = opts
        if opts.positive not in POSITIVES:
            raise ValueError(f"positive must be one of {', '.join(POSITIVES)}")
        for m in {id(base): base, id(assistant): assistant}.values():
            m.requires_grad_(False)
            m.eval()
        params = [self.proj.linear.weight, self.proj.linear.bias]
        if opts.learn_init:
            params.append(self.proj.init)
        self.params = params
        self.optim = torch.optim.AdamW(params, lr=opts.lr, weight_decay=0.0)
        self.step_no = 0
        self.assistant_template = resolve(assistant_tok, opts.template)
        self.base_template = resolve(base_tok, opts.template)

    def _question(self, ex: Example, template: str) -> str:
        return ex.prompt if template == TTS or not ex.question else ex.question

    # ----- the loss ------------------------------------------------------------------------
    def _init_vectors(self) -> torch.Tensor | None:
        N = self.opts.chains
        if N < 1:
            return None
        if self.proj.init is not None and len(self.proj.init) >= N:
            return self.proj.init[:N]
        table = self.assistant.get_input_embeddings().weight
        ids = torch.tensor(init_token_ids(self.atok, N, self.assistant_template, len(table)))
        return table[ids].detach()

    def thoughts(self, ex: Example) -> torch.Tensor:
        """The N projected thought sets of one example, [N, P, d_base] (N = 1 without chains)."""
        placed = assistant_prompt(self.atok, self._question(ex, self.assistant_template), self.opts.thoughts,
                                  self.assistant_template)
        init = self._init_vectors()
        grad_init = init is not None and init.requires_grad
        with torch.set_grad_enabled(grad_init):
            states = assistant_states(self.assistant, placed, init, chains=1)
        return self.proj(states.float())

    def losses(self, batch: list[Example]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, next-token, contrastive) on a batch."""
        zs = [self.thoughts(ex) for ex in batch]
        E = self.base.get_input_embeddings().weight
        seqs, labels, masks, injects = [], [], [], []
        for b, (ex, z) in enumerate(zip(batch, zs)):
            content = self._question(ex, self.base_template)
            placed = base_prompt(self.btok, [{"role": "user", "content": content}], self.opts.thoughts,
                                 template=self.base_template)
            target = self.btok(ex.rationale, add_special_tokens=False)["input_ids"][: self.opts.max_target_tokens]
            eos = self.btok.eos_token_id
            target = target + ([eos] if eos is not None else [])
            seqs.append(placed.ids + target)
            labels.append([-100] * len(placed.ids) + target)
            masks.append(placed.positions)
            injects.append(z[(self.step_no + b) % z.shape[0]])
        L = max(len(s) for s in seqs)
        pad = self.btok.pad_token_id if self.btok.pad_token_id is not None else 0
        ids = torch.tensor([s + [pad] * (L - len(s)) for s in seqs], device=E.device)
        lab = torch.tensor([y + [-100] * (L - len(y)) for y in labels], device=E.device)
        attn = torch.tensor([[1] * len(s) + [0] * (L - len(s)) for s in seqs], device=E.device)
        x = E[ids].detach()
        # the thoughts go in by a mask, not an in-place write, so gradients reach the projection
        sel = torch.zeros(len(seqs), L, 1, device=E.device, dtype=x.dtype)
        thoughts = torch.zeros_like(x)
        for b, (pos, v) in enumerate(zip(masks, injects)):
            sel[b, pos] = 1.0
            thoughts = thoughts.index_put((torch.full((len(pos),), b), torch.tensor(pos)), v.to(x.dtype))
        x = x * (1 - sel) + thoughts
        logits = self.base(inputs_embeds=x, attention_mask=attn).logits[:, :-1].float()
        lm = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1), ignore_index=-100)
        if self.opts.chains >= 2 and self.opts.contrastive_weight > 0:
            # the dropout mask: seeded by (seed, step), so a resumed run draws what a straight one would
            g = torch.Generator().manual_seed(self.opts.seed * 1_000_003 + self.step_no)
            cl = contrastive_loss(torch.stack(zs), self.opts.temperature, self.opts.positive, self.opts.dropout, g)
        else:
            cl = torch.zeros((), device=lm.device)
        return lm + self.opts.contrastive_weight * cl, lm, cl

    def step(self, batch: list[Example]) -> dict:
        self.optim.zero_grad(set_to_none=True)
        total, lm, cl = self.losses(batch)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optim.step()
        self.step_no += 1
        return {"loss": total.item(), "lm": lm.item(), "contrastive": cl.item()}

    # ----- epochs ------------------------------------------------------------------------------
    def batches(self, examples: list[Example], epoch: int) -> Iterator[list[Example]]:
        g = torch.Generator().manual_seed(self.opts.seed * 1000 + epoch)
        order = torch.randperm(len(examples), generator=g).tolist()
        for i in range(0, len(order), self.opts.batch_size):
            yield [examples[j] for j in order[i: i + self.opts.batch_size]]


def warm_start(trainer: Trainer, examples: Iterable[Example]) -> None:
    """With d_assistant = d_base, start the linear map at a rescaled identity (s I, s = mean base
    embedding norm / mean thought norm on the first example) rather than at random: the thoughts
    then begin at the scale of input embeddings. Recorded as init=identity in the checkpoint."""
    proj = trainer.proj
    if proj.d_assistant != proj.d_base:
        return
    ex = next(iter(examples))
    with torch.no_grad():
        tmpl = trainer.assistant_template
        states = assistant_states(trainer.assistant, assistant_prompt(trainer.atok, trainer._question(ex, tmpl),
                                                                      trainer.opts.thoughts, tmpl))
        E = trainer.base.get_input_embeddings().weight
        s = float(E.float().norm(dim=1).mean() / states.float().norm(dim=-1).mean())
        proj.linear.weight.copy_(torch.eye(proj.d_base) * s)
        proj.linear.bias.zero_()


def fit(trainer: Trainer, examples: list[Example], out: str, pair, *, start_epoch: int = 0, progress=None,
        meta: dict | None = None) -> list[dict]:
    """Train for the remaining epochs, saving the projection (and the optimiser state beside it,
    OUT.optim.pt, for --resume) after every epoch. Returns per-epoch mean losses."""
    history = []
    for epoch in range(start_epoch, trainer.opts.epochs):
        sums, n = {"loss": 0.0, "lm": 0.0, "contrastive": 0.0}, 0
        for batch in trainer.batches(examples, epoch):
            stats = trainer.step(batch)
            for k in sums:
                sums[k] += stats[k] * len(batch)
            n += len(batch)
            if progress is not None:
                progress.update(len(batch))
                progress.set_postfix_str(f"epoch {epoch + 1} loss {stats['loss']:.3f} lm {stats['lm']:.3f} "
                                         f"cl {stats['contrastive']:.3f}", refresh=False)
        means = {k: round(v / max(n, 1), 4) for k, v in sums.items()}
        history.append({"epoch": epoch + 1, **means})
        trainer.proj.save(out, pair, {**(meta or {}), "template_assistant": trainer.assistant_template,
                                      "template_base": trainer.base_template, "positive": trainer.opts.positive,
                                      "epochs_done": str(epoch + 1), "last_loss": str(means["loss"])})
        torch.save({"optim": trainer.optim.state_dict(), "step": trainer.step_no, "epoch": epoch + 1},
                   str(out) + ".optim.pt")
    return history


def resume_state(trainer: Trainer, out: str) -> int:
    """Load OUT's projection and optimiser state into the trainer; return the epochs already done."""
    from pathlib import Path

    saved = Projection.load(out)
    with torch.no_grad():
        trainer.proj.linear.weight.copy_(saved.linear.weight)
        trainer.proj.linear.bias.copy_(saved.linear.bias)
        if trainer.proj.init is not None and saved.init is not None:
            trainer.proj.init.copy_(saved.init)
    state_file = Path(str(out) + ".optim.pt")
    if state_file.exists():
        st = torch.load(state_file, weights_only=True)
        trainer.optim.load_state_dict(st["optim"])
        trainer.step_no = st["step"]
    return int(saved.meta.get("epochs_done", "0"))
