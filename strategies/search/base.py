"""What every search method shares: the scorer interface, the reductions of per-step rewards, the
settings, and a controller that scores a prompt's partial solutions at each step boundary and keeps
the search statistics. A method supplies `decide`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from strategies.control import DISCARD, Controller
from strategies.rows import Request, Row
from strategies.search.params import REDUCE, SearchParams


class Scorer(Protocol):
    """A process reward model: per partial solution (its steps so far), one reward per step."""

    def score(self, prompt_text: str, steps: list[list[str]]) -> list[list[float]]: ...


def split_steps(text: str, sep: str) -> list[str]:
    """A solution's steps: its text cut at the separator (a paused row's text ends with one)."""
    parts = text.split(sep)
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    return parts


def problem_text(req: Request, prompt_field: str = "prompt") -> str:
    """The question the scorer judges: the record's prompt, or its last user message."""
    payload = req.payload
    data = getattr(payload[0], "data", None) if isinstance(payload, tuple) and payload else None
    if isinstance(data, dict):
        if isinstance(data.get(prompt_field), str):
            return data[prompt_field]
        users = [m.get("content", "") for m in data.get("messages") or [] if isinstance(m, dict)
                 and m.get("role") == "user"]
        if users:
            return str(users[-1])
    return ""


@dataclass
class _Stats:
    steps: int = 0          # decisions taken with rows paused (search iterations)
    forks: int = 0          # rows created by copying another
    scorer_calls: int = 0
    scored: int = 0         # partial solutions scored, over all calls
    discarded: int = 0      # rows dropped
    discarded_tokens: int = 0


class SearchController(Controller):
    """Scores each step's partial solutions with one scorer call per prompt and step, and asks the
    method (`decide`) what to do with each row. A row's search data (its step rewards, a DVTS
    subtree) lives in `row.state["search"]`, which forks copy with the rest of the row."""

    name = "search"

    def __init__(self, scorer: Scorer, params: SearchParams, prompt_field: str = "prompt"):
        params.check(self.name)
        self.scorer, self.params = scorer, params
        self.step_sep, self.max_steps = params.step_sep, params.max_steps
        self.reduce = REDUCE[params.reduce]
        self.prompt_field = prompt_field
        self.stats: dict[int, _Stats] = {}

    # ----- the engine's calls ------------------------------------------------------------
    def begin(self, req: Request) -> None:
        if req.n != self.params.n:
            raise ValueError(f"a {self.name} search runs -n {self.params.n} rows per prompt, "
                             f"this request has {req.n}")
        self.stats[id(req)] = _Stats()
        for j, row in enumerate(req.rows):
            row.state["search"] = {"origin": j}
        self.start(req)

    def branch(self, req: Request, paused: list[Row]) -> list[tuple[Row, int | str]]:
        st = self.stats[id(req)]
        # rows that grew since they were last scored (a fork inherits its parent's rewards)
        fresh = [r for r in req.rows if r.state["search"].get("scored_at") != len(r.ids)]
        if fresh:
            self.score(req, fresh, st)
        finished = [r for r in req.rows if not r.paused]
        if paused:
            st.steps += 1
        actions = self.decide(req, paused, finished, [r for r in fresh if not r.paused])
        for row, act in actions:
            if act == DISCARD:
                st.discarded += 1
                st.discarded_tokens += len(row.ids) - row.born
            elif isinstance(act, int):
                st.forks += act - 1
        return actions

    def record_fields(self, req: Request) -> dict:
        st = self.stats.pop(id(req))
        tokens = st.discarded_tokens + sum(len(r.ids) - r.born for r in req.rows)
        return {"search": {"method": self.name, "steps": st.steps, "forks": st.forks,
                           "scorer_calls": st.scorer_calls, "scored": st.scored,
                           "discarded": st.discarded, "tokens_generated": tokens}}

    def sample_fields(self, row: Row) -> dict:
        """`step_rewards`, and `reward`: them reduced as the search ranked them (--reduce), the
        per-sample score `-a best-of-n` / `weighted-best-of-n` read (search-and-learn's protocol)."""
        rewards = list(row.state["search"].get("rewards", []))
        out = {"step_rewards": rewards}
        if rewards:
            out["reward"] = float(REDUCE[self.params.reduce](rewards))
        return out

    def run_fields(self) -> dict:
        p = self.params
        return {"search": {"method": self.name, "prm": getattr(self.scorer, "name", type(self.scorer).__name__),
                           "n": p.n, "max_steps": p.max_steps, "step_sep": p.step_sep, "reduce": p.reduce,
                           **self.method_fields()}}

    # ----- for the methods ---------------------------------------------------------------
    def start(self, req: Request) -> None:
        """A request's rows exist (a method sets up its per-row data)."""

    def method_fields(self) -> dict:
        return {}

    def decide(self, req: Request, paused: list[Row], finished: list[Row],
               just_finished: list[Row]) -> list[tuple[Row, int | str]]:
        """The actions (Controller.branch's) for this step. `paused`: rows at a step end;
        `finished`: every finished row still kept, `just_finished` those that ended in this step."""
        raise NotImplementedError

    def score(self, req: Request, rows: list[Row], st: _Stats) -> None:
        """One scorer call for these rows' partial solutions; rewards stored on each row."""
        steps = [split_steps(self.text(r), self.step_sep) for r in rows]
        rewards = self.scorer.score(problem_text(req, self.prompt_field), steps)
        if len(rewards) != len(rows) or any(len(w) != len(s) for w, s in zip(rewards, steps)):
            raise ValueError("the scorer must return one reward per step of each partial solution")
        st.scorer_calls += 1
        st.scored += len(rows)
        for r, w in zip(rows, rewards):
            r.state["search"].update(rewards=[float(x) for x in w], scored_at=len(r.ids))

    def value(self, row: Row) -> float:
        """A row's rank: its reduced step rewards."""
        return float(self.reduce(row.state["search"]["rewards"]))

    def ranked(self, rows: list[Row]) -> list[Row]:
        """Best first; ties keep row order (a stable sort), so the same rewards give the same search."""
        return sorted(rows, key=lambda r: -self.value(r))
