"""Beam search with a process reward model (Snell et al., "Scaling LLM test-time compute";
search-and-learn's beam search).

N rows per prompt, beam width M. At every step each live beam generates one step; the PRM scores
every partial solution; beams that ended (EOS or the length limit) join the completed ones, and of
the rest the N/M best by the reduced step rewards are kept and each is expanded into M
continuations for the next step (forks sharing its keys/values). The search ends when no beam is
left unfinished (the last of --max-steps steps runs each beam to its end); the output is the N
completed beams with the best reduced rewards.

Where the reference is silent or we differ: when fewer than N/M beams are left, the N rows are
shared out among them as evenly as possible (the better ones get the extra copies), so every step
still decodes N rows; ties in the reduced reward keep the earlier row (a stable sort); fewer than N
completed beams are written as they are, not repeated to fill N; completed beams are always ranked
by their reduced reward (search-and-learn's `sort_completed`; its default keeps the first N to
complete).
"""
from __future__ import annotations

from strategies.control import DISCARD
from strategies.search.base import SearchController


class BeamSearch(SearchController):
    name = "beam"

    def method_fields(self) -> dict:
        return {"beam_width": self.params.beam_width}

    def decide(self, req, paused, finished, just_finished):
        n, m = self.params.n, self.params.beam_width
        if not paused:
            best = {id(r) for r in self.ranked(finished)[:n]}
            return ([(r, DISCARD) for r in paused]
                    + [(r, DISCARD) for r in finished if id(r) not in best])
        kept = self.ranked(paused)[: n // m]
        share, extra = divmod(n, len(kept))
        actions = [(r, share + (j < extra)) for j, r in enumerate(kept)]
        chosen = {id(r) for r in kept}
        return actions + [(r, DISCARD) for r in paused if id(r) not in chosen]
