"""Where the thoughts come from and where they go: the two prompts with their placeholders, and the
assistant's forward pass.

Assistant input: a chat user turn `INSTRUCTION + question + P placeholders`, cut right after the
placeholders (attention is causal: nothing after them changes their states). One forward pass,
batched over the chains of a prompt; the soft thoughts are the last-layer hidden states (after
the final norm, as transformers' `last_hidden_state`) at the placeholder positions.

Base input: the record's own user turn with P placeholders appended at its end; the engine's
prefill replaces the placeholders' embeddings with the projected thoughts (Request.inject).

Placeholder tokens (our choice; the papers use reserved special tokens the models never saw):
the tokenizer's last id, `len(tok) - 1`, and for SoftCoT++'s init-tokens chain i the id
`len(tok) - 1 - i`. For a BPE vocabulary the last ids are its rarest merges or added special
tokens, the nearest thing to unused rows. On the base side the id never matters: its embedding
is replaced.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

INSTRUCTION = ("You are a helpful assistant. Read the following math question and think about how to solve "
               "it step by step; your thoughts will guide another model that writes the solution.")
MARK = "\u27e6softcot\u27e7"   # spliced into the chat template's text, then replaced by placeholder ids


def placeholder_id(tok) -> int:
    return len(tok) - 1


def init_token_ids(tok, k: int) -> list[int]:
    """SoftCoT++ chain i's initial vector: row len(tok) - 1 - i of the assistant's embedding table."""
    if k > len(tok):
        raise ValueError(f"{k} chains need {k} distinct embedding rows; the vocabulary has {len(tok)}")
    return [len(tok) - 1 - i for i in range(k)]


@dataclass
class Placed:
    ids: list[int]
    positions: list[int]   # of the placeholders in ids


def question_messages(obj: dict, prompt_field: str) -> list[dict]:
    """The record's chat messages (a `prompt` string becomes one user turn); ValueError if unusable."""
    if "messages" in obj and prompt_field not in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
            raise ValueError("'messages' must be a non-empty list of {role, content}")
        if msgs[-1].get("role") != "user" or not isinstance(msgs[-1].get("content"), str):
            raise ValueError("softcot needs the last message to be the user's question")
        return [dict(m) for m in msgs]
    prompt = obj.get(prompt_field)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"record needs a non-empty string '{prompt_field}' (or 'messages')")
    return [{"role": "user", "content": prompt}]


def _splice(tok, text: str, n: int, ph: int) -> Placed:
    before, _, after = text.partition(MARK)
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"] if s else []  # noqa: E731
    head = enc(before)
    return Placed(head + [ph] * n + enc(after), list(range(len(head), len(head) + n)))


def base_prompt(tok, messages: list[dict], n: int, raw: bool = False) -> Placed:
    """The base prompt: the user turn ends with n placeholders."""
    msgs = [dict(m) for m in messages]
    msgs[-1]["content"] = msgs[-1]["content"].rstrip() + "\n\n" + MARK
    if raw:
        # no template: a newline after the thoughts, so the last prompt token (the first decoded
        # input, which the prefill does not cover) is never a placeholder
        return _splice(tok, msgs[-1]["content"] + "\n", n, placeholder_id(tok))
    if not getattr(tok, "chat_template", None):
        raise ValueError("the model has no chat template; use --raw")
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    return _splice(tok, text, n, placeholder_id(tok))


def assistant_prompt(tok, question: str, n: int) -> Placed:
    """The assistant's input, cut after its n placeholders."""
    content = INSTRUCTION + "\n\n" + question.strip() + "\n\n" + MARK
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=False,
                                       tokenize=False)
    else:
        text = content
    placed = _splice(tok, text, n, placeholder_id(tok))
    placed.ids = placed.ids[: placed.positions[-1] + 1]
    return placed


def assistant_states(model, placed: Placed, init: torch.Tensor | None = None, chains: int = 1) -> torch.Tensor:
    """Last-layer states at the placeholders, [C, P, d_assistant], in one forward pass.

    `init` [C, d]: chain c's initial vector written into every placeholder slot (SoftCoT++);
    without it all C chains read the placeholder token and get the same thoughts (computed once,
    expanded). Gradients flow into `init` when it requires them (training with --learn-init)."""
    emb = model.get_input_embeddings()
    dev = emb.weight.device
    ids = torch.tensor(placed.ids, device=dev)
    at = torch.tensor(placed.positions, device=dev)
    x = emb(ids)[None]
    if init is not None:
        C = init.shape[0]
        # keep the token rows, put the chain's vector at the placeholders (no in-place write, so
        # the graph to `init` survives)
        mask = torch.zeros(len(placed.ids), 1, device=dev, dtype=x.dtype)
        mask[at] = 1.0
        x = x * (1 - mask) + mask * init.to(dev, x.dtype)[:, None, :]
    else:
        C = 1
    h = model.model(inputs_embeds=x.expand(C, -1, -1) if init is None else x).last_hidden_state
    out = h[:, at]
    return out.expand(chains, -1, -1) if init is None else out
