"""Generators from the command line's options: each mode's defaults and how its generator is made.

`prepare(mode, options)` checks every option that needs no model (bad input fails before any
model loads) and returns a `Prepared`; `Prepared.bind(loaded, ...)` makes the generator once the
base model is loaded (SoftCoT then loads its assistant and checks the projection against the
pair). Options a mode does not use are ignored here; `options_for` names them so the command line
can refuse them. A new mode is one builder function and one line in BUILDERS.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from typing import Any, Callable

from strategies.generators import generator_class
from strategies.generators.params import ANSWER, THINKING, DiscreteParams, SoftCoTParams, SoftParams
from strategies.jsonl import InputError

SAMPLING = ("temperature", "top_p", "top_k", "min_p")


def sampling_defaults(mode: str) -> DiscreteParams:
    """Plain sampling for discrete and softcot (the SoftCoT papers' T = 1, top-p = 1); the Soft
    Thinking paper's settings for soft."""
    return THINKING if mode == "soft" else DiscreteParams()


def sampling(mode: str, options: dict) -> DiscreteParams:
    """The mode's sampling settings, each option that is None taking the mode's default."""
    base = sampling_defaults(mode)
    return DiscreteParams(**{k: getattr(base, k) if options.get(k) is None else options[k] for k in SAMPLING})


@dataclass
class Prepared:
    """A generator whose options passed every check that needs no model."""

    make: Callable[..., Any]     # (loaded, load, device, dtype) -> Generator

    def bind(self, loaded, load=None, device: str = "auto", dtype: str = "auto"):
        """The generator for this base model; `load` loads another model (SoftCoT's assistant)."""
        return self.make(loaded, load, device, dtype)


def _discrete(options: dict) -> Prepared:
    gen = generator_class("discrete")(sampling("discrete", options))
    return Prepared(lambda *_: gen)


def _soft(options: dict) -> Prepared:
    answer = DiscreteParams(**{k: options.get(f"answer_{k}", getattr(ANSWER, k)) for k in SAMPLING})
    own = {f.name: options[f.name] for f in fields(SoftParams)
           if f.name not in ("thinking", "answer") and f.name in options}
    try:
        params = SoftParams(thinking=sampling("soft", options), answer=answer, **own)
    except ValueError as e:
        raise InputError(str(e)) from None
    gen = generator_class("soft")(params)
    return Prepared(lambda *_: gen)


def _softcot(options: dict) -> Prepared:
    from strategies.softcot.projection import CheckpointError, Projection
    from strategies.softcot.thoughts import TEMPLATES

    own = {k: options[k] for k in ("thoughts", "perturb", "perturb_sigma", "per_chain") if k in options}
    try:
        params = SoftCoTParams(sampling=sampling("softcot", options), **own)
    except ValueError as e:
        raise InputError(str(e)) from None
    path = options.get("projection")
    proj = None
    if path is not None:
        try:
            proj = Projection.load(path)   # a few small tensors: cheap, and catches bad files early
        except CheckpointError as e:
            raise InputError(str(e)) from None
    template = options.get("softcot_template") or "auto"
    if template not in TEMPLATES:
        raise InputError(f"--softcot-template {template!r}: choose from {', '.join(TEMPLATES)}")
    assistant, raw = options.get("assistant"), bool(options.get("raw"))
    return Prepared(lambda loaded, load, device, dtype: _softcot_generator(
        params, path, proj, loaded, assistant, load, device, dtype, template, raw))


def _softcot_generator(params, path, proj, loaded, assistant, load, device, dtype, template, raw):
    """Load the assistant (the base itself when not given or the same name) and check the
    projection against the pair; raises InputError before any forward pass."""
    from strategies.generators.softcot import SoftCoT
    from strategies.models import ModelNotFound
    from strategies.softcot.projection import CheckpointError, for_pair

    if assistant is None or assistant == loaded.name:
        helper = loaded
    else:
        if load is None:
            from strategies.models import load
        try:
            helper = load(assistant, device, dtype)
        except ModelNotFound as e:
            raise InputError(f"--assistant: {e}") from None
    try:
        proj, warnings = for_pair(path, helper, loaded, proj)
    except CheckpointError as e:
        raise InputError(str(e)) from None
    for w in warnings:
        print(f"tts: warning: {w}", file=sys.stderr)
    try:
        return SoftCoT(params, helper.model, helper.tokenizer, proj, assistant_name=helper.name, template=template,
                       base_tokenizer=loaded.tokenizer, raw=raw)
    except ValueError as e:   # a reference template on a tokenizer without its special tokens
        raise InputError(f"--softcot-template: {e}") from None


BUILDERS: dict[str, Callable[[dict], Prepared]] = {"discrete": _discrete, "soft": _soft, "softcot": _softcot}


def prepare(mode: str, options: dict) -> Prepared:
    """Check `options` (the command's, by parameter name; None: the mode's default) for `mode`."""
    if mode not in BUILDERS:
        raise InputError(f"unknown mode {mode!r} (known: {', '.join(BUILDERS)})")
    return BUILDERS[mode](options)
