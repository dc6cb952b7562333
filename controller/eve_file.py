"""Follow a growing Suricata eve.json by name, like `tail -F` (pure, no Ryu).

The controller reacts to alerts that Suricata appends to eve.json; the
caller (a greenthread) calls EveFollower.read() periodically and gets the
complete new lines. Nothing here blocks for long or raises for the file:

- an absent file gives [] until it appears, and is then read from its start;
  at the first open an existing file is read from its END (unless
  from_start): a controller starting must not replay yesterday's alerts;
- a file that cannot be read right now (permissions, a directory, a FIFO)
  gives [] and sets `error`, which is None again once reading works;
- rotation by rename (logrotate `create`, Suricata reopening on SIGHUP): the
  old file is read to its end before the new one is read from its start;
- truncation in place (logrotate `copytruncate`) starts again at offset 0;
- a line longer than max_line bytes is dropped and counted, not buffered for
  ever (an attacker may influence what goes into the file); bytes that are
  not UTF-8 become U+FFFD, so the caller's JSON parser rejects the line;
- at most `chunk` bytes are read per call, the rest comes on the next one.

Limits. A file truncated and then regrown past the old offset between two
calls cannot be told by its size; it is detected when the byte just before
the old offset changed, which is likely but not certain (a line ending at
exactly that place looks the same): then reading goes on from the old
offset and the lines before it are missed. A partial last line of a rotated
file is dropped (its writer has moved on). Rotating twice between two calls
loses the middle file, as with tail -F.
"""
from __future__ import annotations

import errno
import os
import stat


class EveFollower:
    chunk = 4 << 20  # bytes per read() at most: one call must not hold the event loop

    def __init__(self, path: str, from_start: bool = False, max_line: int = 1 << 20):
        self.path = path
        self.max_line = max_line
        self.error: str | None = None
        self.lines = self.rotations = self.truncations = self.overlong = 0
        self._fd: int | None = None
        self._id = None            # (st_dev, st_ino) of the open file
        self._offset = 0           # bytes of the open file consumed
        self._last = b""           # the byte before _offset, to see it rewritten
        self._buf = bytearray()    # a partial line waiting for its newline
        self._skipping = False     # inside an overlong line: drop up to its newline
        self._at_end = not from_start  # for the first open only
        self._closed = False

    def read(self) -> list[str]:
        out: list[str] = []
        if not self._closed:
            try:
                self._follow(out)
                self.error = None
            except OSError as e:
                self.error = str(e)    # lines read before the error are still returned
        self.lines += len(out)
        return out

    def close(self) -> None:
        self._close()
        self._closed = True

    def _follow(self, out: list[str]) -> None:
        if self._fd is None and not self._open():
            return
        budget = self.chunk
        while True:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                st = None          # deleted: keep the open file, its writer may still write
            moved = st is not None and (st.st_dev, st.st_ino) != self._id
            self._check_truncated()
            data = os.pread(self._fd, budget, self._offset)
            if data:
                self._offset += len(data)
                self._last = data[-1:]
                self._split(data, out)
                budget -= len(data)
            # Switch only once the new file has data: until Suricata reopens on
            # SIGHUP it writes to the renamed old file, and those lines count too.
            # Its last write there came before its first write here, which came
            # before our stat, so the read above got everything.
            if budget <= 0 or not moved or st.st_size == 0:
                return
            self._close()
            self.rotations += 1
            if not self._open():
                return

    def _open(self) -> bool:
        try:
            # O_NONBLOCK: opening a FIFO put at the path must not hang the caller.
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            self._at_end = False   # it appears later: all of it is new
            return False
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file", self.path)
        self._fd, self._id = fd, (st.st_dev, st.st_ino)
        self._offset = st.st_size if self._at_end else 0
        self._at_end = False
        self._last = os.pread(fd, 1, self._offset - 1) if self._offset else b""
        return True

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
        self._buf.clear()
        self._skipping = False

    def _check_truncated(self) -> None:
        # Shrunk below the offset (pread gives b"") or rewritten under it: copytruncate.
        if self._offset and os.pread(self._fd, 1, self._offset - 1) != self._last:
            self.truncations += 1
            self._offset, self._last = 0, b""
            self._buf.clear()
            self._skipping = False

    def _split(self, data: bytes, out: list[str]) -> None:
        self._buf += data
        *done, rest = self._buf.split(b"\n")
        for line in done:
            if self._skipping:     # the tail of a line already dropped as overlong
                self._skipping = False
            elif len(line) > self.max_line:
                self.overlong += 1
            else:
                out.append(line.decode("utf-8", "replace"))
        if len(rest) > self.max_line:  # no newline in sight: drop now, don't buffer for ever
            if not self._skipping:
                self.overlong += 1
            self._skipping = True
            rest = b""
        self._buf = bytearray(rest)
