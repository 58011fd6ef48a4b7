"""`tts prune`: the online pruners' decisions replayed on a stored `tts generate --trace` run.

The replay is the engine's own scheduler (Backend.run: admission, waiting, slots, retirement)
with the model replaced by the stored traces: each step appends every active row's next stored
token and signals. The controller therefore sees exactly the calls it would see online with the
same batch size, so online and replay decide the same for the same samples — including what
depends on timing (when DeepPrune's last row reaches its prefix, which samples DeepConf's
consensus finds finished). The batch size defaults to the stored run's.
"""
from __future__ import annotations

from typing import Iterable, Iterator

from strategies.backend import SIGNALS, Backend, decode_text
from strategies.sample_fields import BELOW_THRESHOLD, sample_record
from strategies.rows import SKIPPED, Request, Row


class TraceError(ValueError):
    pass


class _NoFields:
    def sample_fields(self, row, trace):
        return {}


class ReplayEngine(Backend):
    """Backend.run over stored traces: `Request.payload` holds the record's samples."""

    name = "replay"

    def __init__(self, tokenizer, controller, *, batch_size: int, stop=()):
        self.tokenizer = tokenizer
        self.controller = controller
        self.batch_size = self.capacity = batch_size
        self.stop = [s for s in stop if s]
        self.progress = None
        self.tokens_generated = 0
        self.steps = 0
        controller.bind(self.text_of)

    def admit(self, req: Request) -> list[Row]:
        if req.error is not None:
            return []
        req.rows = [Row(req, s.get("i", j), None, 0, [], [], state={"j": j})
                    for j, s in enumerate(req.payload["samples"])]
        req.unplaced = req.n
        self.controller.begin(req)
        return list(req.rows)

    def place(self, row: Row, active: list[Row]) -> None:
        active.append(row)
        row.started = True
        row.req.unplaced -= 1

    def step(self, active: list[Row]) -> None:
        for r in active:
            t = self._stored(r)["trace"]
            k = len(r.ids)
            r.ids.append(t["ids"][k])
            for name in SIGNALS:
                getattr(r, name).append(t[name][k])
        self.steps += 1
        self.tokens_generated += len(active)
        for r in active:
            r.finish = self._finish_reason(r)
        for r, why in self.controller.step([r for r in active if r.finish is None]):
            r.finish = why

    def text_of(self, r: Row) -> str:
        return decode_text(self.tokenizer, r.ids, self.stop)

    @staticmethod
    def _stored(r: Row) -> dict:
        return r.req.payload["samples"][r.state["j"]]

    def _finish_reason(self, r: Row) -> str | None:
        s = self._stored(r)
        return s.get("finish") or "stop" if len(r.ids) >= len(s["trace"]["ids"]) else None


def check_traces(rec: dict, line) -> None:
    for s in rec.get("samples") or []:
        t = s.get("trace")
        if not isinstance(t, dict) or any(not isinstance(t.get(k), list) for k in ("ids",) + SIGNALS):
            raise TraceError(f"record {line}: samples need per-token traces (rerun `tts generate` with --trace)")
        if s.get("finish") in ("pruned", "low-confidence", "consensus") or rec.get("skipped"):
            raise TraceError(f"record {line}: the run was already pruned; replay needs an unpruned run")
        if not t["ids"]:
            raise TraceError(f"record {line}: a sample has an empty trace")


def replay(records: Iterable[dict], tokenizer, controller, *, batch_size: int, stop=()) -> Iterator[dict]:
    """Yield each record with its samples cut where the online pruner would have stopped them,
    `skipped` for samples it would never have started, and `prune` token counts."""
    eng = ReplayEngine(tokenizer, controller, batch_size=batch_size, stop=stop)

    def requests():
        for line, rec in enumerate(records, start=1):
            if not isinstance(rec.get("samples"), list):
                yield Request(key=rec.get("id"), prompt_ids=[], n=0, payload=rec, error="no samples")
                continue
            check_traces(rec, line)
            yield Request(key=rec.get("id", line), prompt_ids=[], n=len(rec["samples"]), payload=rec)

    for req in eng.run(requests()):
        rec = dict(req.payload)
        if req.error is not None:
            yield rec
            continue
        full = sum(len(s["trace"]["ids"]) for s in rec["samples"])
        samples = []
        for row in req.rows:
            if row.finish == SKIPPED:
                continue
            old = eng._stored(row)
            if len(row.ids) == len(old["trace"]["ids"]) and row.finish == old.get("finish"):
                s = dict(old)  # untouched: keep the stored sample as it is
            else:
                s = sample_record(eng.text_of(row), row, _NoFields(), True)
                s.pop("i", None)
                s = {"i": old.get("i", row.i), **s}
            for k in ("cluster", "cluster_size", BELOW_THRESHOLD):  # the replayed pruner decides these anew
                s.pop(k, None)
            s.update(controller.sample_fields(row))
            samples.append(s)
        rec["samples"] = samples
        skipped = sum(r.finish == SKIPPED for r in req.rows)
        if skipped:
            rec["skipped"] = skipped
        used = sum(len(r.ids) for r in req.rows)
        extra = controller.record_fields(req).get("prune", {})
        rec["prune"] = {**extra, "tokens": used, "tokens_full": full, "tokens_saved": full - used}
        rec["run"] = {**(rec.get("run") or {}), **controller.run_fields(), "replay": True}
        yield rec
