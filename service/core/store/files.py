"""Uploaded dataset files: their records, by tenant (the bytes live in the artifacts folder)."""

from __future__ import annotations

from typing import cast

from service.core.records import FileRecord
from service.core.store.base import P, StoreBase, dumps, record_of


class FileStore(StoreBase):
    """``ct:file:<id>`` and ``ct:tenant:<t>:files``."""

    def create_file(self, record: FileRecord) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(P + f"file:{record.id}", mapping={k: dumps(v) for k, v in record.model_dump().items()})
        pipe.zadd(P + f"tenant:{record.tenant}:files", {record.id: record.created_at})
        pipe.execute()

    def get_file(self, file_id: str, tenant: str | None = None) -> FileRecord | None:
        """The file, or None when missing (or another tenant's than ``tenant``)."""
        return record_of(FileRecord, cast(dict[str, str], self.r.hgetall(P + f"file:{file_id}")), tenant)

    def list_files(self, tenant: str) -> list[FileRecord]:
        ids = cast(list[str], self.r.zrevrange(P + f"tenant:{tenant}:files", 0, -1))
        return [f for f in (self.get_file(i) for i in ids) if f is not None]

    def delete_file(self, record: FileRecord) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(P + f"file:{record.id}")
        pipe.zrem(P + f"tenant:{record.tenant}:files", record.id)
        pipe.execute()
