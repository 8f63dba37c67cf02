"""A job's metric and event streams: appended once per (kind, step) or event number
(``scripts/append_once.lua``), read by cursor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from service.core.jobdir import json_safe
from service.core.records import Page
from service.core.store.base import P, StoreBase, dumps, page_of, stream_low


class StreamStore(StoreBase):
    """``ct:job:<id>:metrics``, ``:events`` and ``:steps``."""

    def append_metric(self, job_id: str, record: Mapping[str, Any], **job_fields: Any) -> bool:
        """Append a metric record unless its (kind, step) is not newer than the last one stored.

        ``job_fields`` update the job record in the same atomic step. Returns whether it was added.
        """
        kind = str(record.get("kind", "train"))
        return self._append_once(job_id, "metrics", kind, int(record.get("step", 0)), record, job_fields)

    def append_event(self, job_id: str, record: Mapping[str, Any], **job_fields: Any) -> bool:
        """Append an event; one carrying a ``seq`` (its number in ``events.jsonl``) is appended
        only when newer than the last stored, so replaying a job's file adds only what is missing.
        ``job_fields`` update the job record in the same atomic step. Returns whether it was added."""
        seq = record.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            self.r.xadd(P + f"job:{job_id}:events", {"r": dumps(json_safe(dict(record)))})
            if job_fields:
                self.update_job(job_id, **job_fields)
            return True
        return self._append_once(job_id, "events", "event", seq, record, job_fields)

    def _append_once(
        self,
        job_id: str,
        stream: str,
        kind: str,
        number: int,
        record: Mapping[str, Any],
        job_fields: Mapping[str, Any],
    ) -> bool:
        """Append ``record`` to the job's ``stream`` unless ``number`` is not newer than the last
        stored for ``kind``; set ``job_fields`` on the job in the same atomic step."""
        args: list[str] = [kind, str(number), dumps(json_safe(dict(record)))]
        for key, value in job_fields.items():
            args += [key, dumps(json_safe(value))]
        keys = [P + f"job:{job_id}:steps", P + f"job:{job_id}:{stream}", P + f"job:{job_id}"]
        return bool(self._append_once_script(keys=keys, args=args))

    def read_stream(self, job_id: str, which: str, *, after: str = "0", limit: int = 1000) -> Page:
        """Records of the ``metrics`` or ``events`` stream strictly after ``after``.

        ``next_cursor`` is the id of the last record returned (``after`` itself when none), so
        a client passing it back sees every record exactly once.
        """
        low = stream_low(which, after)
        if low is None:
            return Page(items=[], next_cursor=after)
        rows = self.r.xrange(P + f"job:{job_id}:{which}", low, "+", count=limit)
        return page_of(cast(list[tuple[str, dict[str, str]]], rows), after)
