"""`tts generate --mode softcot`: option checks (before any model loads) and the generator's setup."""
from __future__ import annotations

import sys
from dataclasses import dataclass

from strategies.jsonl import InputError


@dataclass
class Setup:
    params: object          # SoftCoTParams
    projection_path: str | None
    projection: object      # a loaded Projection, or None (identity)


def check_options(sampling, thoughts: int, perturb: str, sigma: float, per_chain: int,
                  projection_path: str | None) -> Setup:
    from strategies.generators.params import SoftCoTParams

    try:
        params = SoftCoTParams(sampling=sampling, thoughts=thoughts, perturb=perturb, perturb_sigma=sigma,
                               per_chain=per_chain)
    except ValueError as e:
        raise InputError(str(e)) from None
    proj = None
    if projection_path is not None:
        from strategies.softcot.projection import CheckpointError, Projection

        try:
            proj = Projection.load(projection_path)   # a few small tensors: cheap, and catches bad files early
        except CheckpointError as e:
            raise InputError(str(e)) from None
    return Setup(params, projection_path, proj)


def softcot_generator(setup: Setup, loaded, assistant: str | None, device: str, dtype: str):
    """Load the assistant (the base itself when not given or the same name) and check the
    projection against the pair; raises InputError before any forward pass."""
    from strategies.generators.softcot import SoftCoT
    from strategies.softcot.projection import CheckpointError, for_pair
    from strategies.models import ModelNotFound, load

    if assistant is None or assistant == loaded.name:
        helper = loaded
    else:
        try:
            helper = load(assistant, device, dtype)
        except ModelNotFound as e:
            raise InputError(f"--assistant: {e}") from None
    try:
        proj, warnings = for_pair(setup.projection_path, helper, loaded, setup.projection)
    except CheckpointError as e:
        raise InputError(str(e)) from None
    for w in warnings:
        print(f"tts: warning: {w}", file=sys.stderr)
    return SoftCoT(setup.params, helper.model, helper.tokenizer, proj, assistant_name=helper.name)
