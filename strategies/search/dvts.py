"""Diverse verifier tree search (DVTS; Beeching et al., search-and-learn).

N rows per prompt split into N/M independent subtrees of M rows. At every step each subtree's M
candidates (one step each from its current beam) are scored by the PRM and the subtree keeps only
its best by the reduced step rewards, which is expanded into M continuations for the next step.
A subtree ends when its best candidate has ended (EOS or the length limit). Subtrees never compare
with each other: the search's diversity comes from that independence.

Where the reference is silent or we differ: each subtree writes one sample, its final beam (N/M
samples per prompt); search-and-learn also returns the other M - 1 candidates of the last step,
most of them unfinished. Ties keep the earlier row (a stable sort).
"""
from __future__ import annotations

from strategies.control import DISCARD
from strategies.search.base import SearchController


class DVTS(SearchController):
    name = "dvts"

    def method_fields(self) -> dict:
        return {"beam_width": self.params.beam_width, "subtrees": self.params.n // self.params.beam_width}

    def start(self, req):
        for j, row in enumerate(req.rows):
            row.state["search"]["subtree"] = j // self.params.beam_width

    def decide(self, req, paused, finished, just_finished):
        m = self.params.beam_width
        trees: dict[int, list] = {}
        for r in paused + just_finished:   # this step's candidates; earlier finished rows are kept
            trees.setdefault(r.state["search"]["subtree"], []).append(r)
        actions = []
        for _, cands in sorted(trees.items()):
            cands.sort(key=req.rows.index)   # row order, so ties do not depend on pause order
            best = self.ranked(cands)[0]
            actions.extend((r, DISCARD) for r in cands if r is not best)
            if best.paused:
                actions.append((best, m))
        return actions
