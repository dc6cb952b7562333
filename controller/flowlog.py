"""The flow log: one JSON object per line, rotated by size, kept for a
retention period (pure file handling, no Ryu).

`path` is the live file; rotated ones are path.1 (newest) .. path.N. A file
is rotated when it would pass max_bytes; rotated files older than the
retention, or beyond `keep`, are deleted.
"""
from __future__ import annotations

import json
import os
import time

MAX_BYTES = 64 * 1024 * 1024
RETENTION_HOURS = 168.0
KEEP = 20


class FlowLog:
    def __init__(self, path: str, max_bytes: int = MAX_BYTES,
                 retention_hours: float = RETENTION_HOURS, keep: int = KEEP):
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        self.retention = retention_hours * 3600
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")
        self._size = self._file.tell()
        self.expire()

    def write(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n"
        if self._size and self._size + len(line) > self.max_bytes:
            self.rotate()
        self._file.write(line)
        self._size += len(line)

    def flush(self) -> None:
        self._file.flush()

    def rotate(self) -> None:
        self._file.close()
        for n in range(self.keep, 0, -1):
            older = f"{self.path}.{n}"
            if os.path.exists(older):
                if n == self.keep:
                    os.remove(older)
                else:
                    os.replace(older, f"{self.path}.{n + 1}")
        os.replace(self.path, f"{self.path}.1")
        self._file = open(self.path, "a", encoding="utf-8")
        self._size = 0
        self.expire()

    def expire(self, now: float | None = None) -> list[str]:
        """Delete rotated files last written before the retention period."""
        now = time.time() if now is None else now
        gone = []
        for n in range(1, self.keep + 1):
            older = f"{self.path}.{n}"
            if os.path.exists(older) and now - os.path.getmtime(older) > self.retention:
                os.remove(older)
                gone.append(older)
        return gone

    def close(self) -> None:
        self._file.close()
