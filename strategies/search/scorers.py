"""The scorer `--prm` names: a process reward model from a local checkpoint (verifiers.rm: the
step-tag and token-classification formats `tts score` reads), or `scripted:CHARS`, a stand-in for
plumbing and tests (strategies/search/scripted.py)."""
from __future__ import annotations

from strategies.search.scripted import ScriptedScorer


class RewardModelScorer:
    """A PRM from verifiers.rm as a search Scorer: each partial solution's steps scored in one
    batched call (`score_steps`), the same per-step scores `tts score` writes."""

    def __init__(self, model, name: str, batch_size: int = 8):
        self.model, self.name, self.batch_size = model, name, batch_size

    def score(self, prompt_text: str, steps: list[list[str]]) -> list[list[float]]:
        todo = [j for j, sol in enumerate(steps) if sol]
        got = self.model.score_steps([(prompt_text, steps[j]) for j in todo], self.batch_size) if todo else []
        out: list[list[float]] = [[] for _ in steps]
        for j, scores in zip(todo, got):
            out[j] = [float(x) for x in scores]
        return out


def scorer(spec: str, device: str = "auto", dtype: str = "auto"):
    """`scripted:CHARS`, or a PRM checkpoint (a local directory or a hub id in the local cache)."""
    if spec.startswith("scripted:"):
        return ScriptedScorer(spec.partition(":")[2])
    from verifiers.rm import RewardModelError, load_reward_model

    try:
        model = load_reward_model(spec, "prm", device, dtype)
    except RewardModelError as e:
        raise ValueError(f"--prm {spec}: {e}") from None
    return RewardModelScorer(model, spec)
