"""`tts softcot train`: fit a SoftCoT projection (strategies/softcot/train.py) for a model pair."""
from __future__ import annotations

import sys
from typing import Optional

import typer

from strategies.jsonl import InputError

softcot_app = typer.Typer(help="SoftCoT projections: train one for an assistant/base pair (docs/softcot.md).",
                          no_args_is_help=True)


@softcot_app.command("train")
def train(
    input: str = typer.Argument(..., help="Training JSONL: question + rationale, or GSM8K question + answer ('#### N')."),
    output: str = typer.Option(..., "-o", "--output", help="Projection checkpoint to write (safetensors)."),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Base model (frozen)."),
    assistant: Optional[str] = typer.Option(None, "--assistant", help="Assistant model (frozen) [default: the base]."),
    epochs: int = typer.Option(1, "--epochs", min=1, help="Passes over the data; a checkpoint after each."),
    lr: float = typer.Option(1e-4, "--lr", min=0.0, help="AdamW learning rate."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Examples per step."),
    thoughts: int = typer.Option(4, "--thoughts", help="Soft thoughts per question (use the count you generate with)."),
    chains: int = typer.Option(4, "--chains", min=1, help="Perturbed thought sets per question (N of the contrastive term)."),
    learn_init: bool = typer.Option(False, "--learn-init", help="Also learn the N initial vectors (SoftCoT++)."),
    contrastive_weight: float = typer.Option(0.1, "--contrastive-weight", min=0.0, help="Weight of the InfoNCE term (0 = off)."),
    positive: str = typer.Option("dropout", "--positive", help="InfoNCE positive: dropout (a p=0.5 dropout copy, "
                                 "the reference's) | self (the set itself)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Use only the first N records."),
    skip: int = typer.Option(0, "--skip", min=0, help="Skip the first N records (hold a slice apart)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the shuffling."),
    resume: bool = typer.Option(False, "--resume", help="Continue from --output's last saved epoch."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | auto."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a projection; prints one JSON line (per-epoch losses) when done."""
    from pathlib import Path

    import orjson

    from strategies.jsonl import check_output, iter_objects

    check_output(output, inputs=[input])  # before minutes of training, not after
    if thoughts < 1:
        raise InputError("--thoughts must be at least 1")
    if positive not in ("dropout", "self"):
        raise InputError(f"--positive must be dropout or self, not {positive!r}")
    if resume and not Path(output).is_file():
        raise InputError(f"--resume: {output!r} does not exist yet")
    if not Path(input).is_file():
        raise InputError(f"{input!r}: no such file")
    from strategies.softcot.train import example_of

    examples = []
    for k, (line, obj) in enumerate(iter_objects(input), start=1):
        if k <= skip:
            continue
        try:
            examples.append(example_of(obj))
        except ValueError as e:
            raise InputError(f"{input}: line {line}: {e}") from None
        if limit and len(examples) >= limit:
            break
    if not examples:
        raise InputError(f"{input}: no training records")

    import torch

    from strategies.softcot.projection import Pair, Projection, tokenizer_family
    from strategies.softcot.thoughts import init_token_ids, resolve
    from strategies.softcot.train import Trainer, TrainOptions, fit, resume_state, warm_start
    from tts_cli.progress import progress_bar
    from strategies.models import ModelNotFound, load

    torch.manual_seed(seed)
    try:
        base = load(model, device, "float32")
        helper = base if assistant in (None, model) else load(assistant, device, "float32")
    except ModelNotFound as e:
        raise InputError(str(e)) from None
    d_a, d_b = helper.model.config.hidden_size, base.model.config.hidden_size
    table = helper.model.get_input_embeddings().weight.detach()
    rows = table[torch.tensor(init_token_ids(helper.tokenizer, chains, resolve(helper.tokenizer), len(table)))]
    proj = Projection.fresh(d_a, d_b, chains if learn_init else 0, init_rows=rows, seed=seed).to(base.model.device)
    opts = TrainOptions(epochs=epochs, lr=lr, batch_size=batch_size, thoughts=thoughts, chains=chains,
                        learn_init=learn_init, contrastive_weight=contrastive_weight, positive=positive, seed=seed)
    trainer = Trainer(base.model, base.tokenizer, helper.model, helper.tokenizer, proj, opts)
    pair = Pair(helper.name, base.name, d_a, d_b, tokenizer_family(helper.tokenizer), tokenizer_family(base.tokenizer))
    meta = {"thoughts": str(thoughts), "chains": str(chains), "learn_init": str(learn_init),
            "contrastive_weight": str(contrastive_weight), "lr": str(lr), "examples": str(len(examples)),
            "init": "identity" if d_a == d_b else "random"}
    start = 0
    if resume:
        start = resume_state(trainer, output)
        print(f"tts: resuming after epoch {start}", file=sys.stderr)
    else:
        warm_start(trainer, examples)
    with progress_bar(quiet, unit="ex") as bar:
        bar.total = len(examples) * (epochs - start)
        history = fit(trainer, examples, output, pair, start_epoch=start, progress=bar, meta=meta)
    typer.echo(orjson.dumps({"output": output, "examples": len(examples), "epochs": history}).decode())
