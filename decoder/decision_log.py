"""The decision log: every action, event and status the daemon publishes, appended to a file.

Format: a msgpack stream. The first object of every file is a map
``{"actionloop_decision_log": 1, "created_ns": <time_ns>}``; each following object is an array of
the message's wire parts exactly as they went out on the socket (``[topic, header]``, both
binary), so a record is decoded with ``protocols.codec.decode`` and the log defines no second
format. The daemon's hot-path thread writes each batch of records about a millisecond after
publishing it, when no frame is waiting (one ``write`` into the page cache, no other thread
woken): a SIGTERM loses nothing, a crash or SIGKILL at most the last ~2 ms of records (power
loss can still drop what the page cache held). Files rotate by size: ``decisions.msgpack`` is
the current one, ``.1`` the previous, up to ``keep``.
"""

from __future__ import annotations

import collections
import io
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgpack
import structlog

log = structlog.get_logger(__name__)

MAGIC_KEY = "actionloop_decision_log"
FORMAT_VERSION = 1


class DecisionLogError(ValueError):
    """A decision log file that cannot be read; the message names the file and the offset."""


def rotated_paths(path: Path) -> list[Path]:
    """The current file and its rotated predecessors that exist, oldest first."""
    path = Path(path)
    older = []
    index = 1
    while (candidate := path.with_name(f"{path.name}.{index}")).exists():
        older.append(candidate)
        index += 1
    files = list(reversed(older))
    if path.exists():
        files.append(path)
    return files


class DecisionLogWriter:
    """Appends records queued by one thread; whoever owns the hot path writes them.

    ``append`` only packs the record and queues it (no system call, nothing woken).
    ``write_pending`` writes everything queued with one unbuffered ``write`` if nobody else holds
    the file (it never waits for a lock): the daemon's hot-path thread calls it once no frame has
    come for a millisecond after a send (or once the oldest record is 2 ms old), so records reach
    the kernel within about a millisecond of their send.
    A timer thread (every ``flush_interval_s``, not per record) writes whatever is left over and
    rotates the file by size, so neither an ``fsync`` nor a rename ever runs on the hot path;
    ``close`` (a clean shutdown, SIGTERM) writes everything and fsyncs. A disk that stalls or
    fails never blocks decoding: write errors are counted and logged, and if the backlog exceeds
    ``max_pending`` records new ones are dropped and counted.
    """

    def __init__(
        self,
        path: Path,
        rotate_bytes: int,
        keep: int,
        *,
        flush_interval_s: float = 0.05,
        max_pending: int = 100_000,
    ) -> None:
        self.path = Path(path)
        self.rotate_bytes = rotate_bytes
        self.keep = keep
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.records_written = 0
        self.records_dropped = 0
        self.write_errors = 0
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)  # used by append's thread only
        self._pending: collections.deque[bytes] = collections.deque()  # append/popleft are thread-safe
        self.pending_since_ns = 0  # monotonic time the oldest queued record was appended
        self._file: io.FileIO | None = None
        self._size = 0
        self._io_lock = threading.Lock()  # the file: hot path vs timer thread vs flush()/close()
        self._closing = threading.Event()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()  # errors here (read-only directory, ...) are startup errors: raised
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._file = io.FileIO(fd, "ab", closefd=True)
        self._size = os.fstat(fd).st_size
        if self._size == 0:
            header = msgpack.packb({MAGIC_KEY: FORMAT_VERSION, "created_ns": time.time_ns()}, use_bin_type=True)
            self._write(header)

    def append(self, parts: Sequence[bytes]) -> bool:
        """Queue one published message (its wire parts). False if it had to be dropped."""
        if self._closing.is_set() or self._file is None:
            return False
        if len(self._pending) >= self.max_pending:
            self.records_dropped += 1
            if self.records_dropped == 1 or self.records_dropped % 10_000 == 0:
                log.error("decision log cannot keep up; dropping records", dropped=self.records_dropped)
            return False
        if not self._pending:
            self.pending_since_ns = time.monotonic_ns()
        self._pending.append(self._packer.pack(list(parts)))
        return True

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def write_pending(self) -> None:
        """Write what is queued now, unless another thread holds the file (then it stays queued
        for the next call or the timer). Never rotates, never fsyncs, never waits."""
        if not self._pending or not self._io_lock.acquire(blocking=False):
            return
        try:
            self._write_batch()
        finally:
            self._io_lock.release()

    def _run(self) -> None:
        while not self._closing.wait(self.flush_interval_s):
            if self._pending or self._size >= self.rotate_bytes:
                self.flush()

    def flush(self) -> None:
        """Write every queued record now, and rotate if the file is due (any thread; waits for
        the file)."""
        with self._io_lock:
            self._write_batch()
            if self._file is not None and self._size >= self.rotate_bytes:
                self._rotate()

    def _write_batch(self) -> None:
        batch: list[bytes] = []
        pending = self._pending
        while pending:
            batch.append(pending.popleft())
        if not batch or self._file is None:
            return
        if self._write(b"".join(batch) if len(batch) > 1 else batch[0]):
            self.records_written += len(batch)

    def _write(self, data: bytes) -> bool:
        assert self._file is not None
        try:
            view = memoryview(data)
            while view:  # a regular file takes it in one write; loop for the pathological case
                written = self._file.write(view)
                if not written:
                    raise OSError("short write")
                view = view[written:]
        except OSError as exc:
            self.write_errors += 1
            if self.write_errors == 1 or self.write_errors % 1000 == 0:
                log.error("decision log write failed", path=str(self.path), error=str(exc), errors=self.write_errors)
            return False
        self._size += len(data)
        return True

    def _rotate(self) -> None:
        assert self._file is not None
        self._fsync()
        self._file.close()
        self._file = None
        try:
            oldest = self.path.with_name(f"{self.path.name}.{self.keep}")
            if oldest.exists():
                oldest.unlink()
            for index in range(self.keep - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{index}")
                if src.exists():
                    src.rename(self.path.with_name(f"{self.path.name}.{index + 1}"))
            self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        except OSError as exc:
            self.write_errors += 1
            log.error("decision log rotation failed; appending to the current file", error=str(exc))
        try:
            self._open()
        except OSError as exc:
            self.write_errors += 1
            log.error("decision log cannot be reopened after rotation; logging stops", error=str(exc))
            return
        log.info("decision log rotated", path=str(self.path), keep=self.keep)

    def _fsync(self) -> None:
        if self._file is not None:
            try:
                os.fsync(self._file.fileno())
            except OSError as exc:
                log.warning("decision log fsync failed", error=str(exc))

    def close(self) -> None:
        """Write everything queued, fsync, close. Safe to call twice."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._thread.join(timeout=5)
        with self._io_lock:
            self._write_batch()
            if self._file is not None:
                self._fsync()
                self._file.close()
                self._file = None


def read_records(path: Path, follow: bool = False, poll_s: float = 0.1) -> Iterator[list[bytes]]:
    """Yield each record's wire parts from one file, oldest first.

    A record cut short at the very end (the daemon was killed mid-write) ends the iteration
    quietly; anything that is not a decision log raises DecisionLogError. With ``follow``, keep
    reading as records are appended; when the daemon rotates the file, finish it and go on with
    the file that was written after it, so nothing is skipped or read twice.
    """
    path = Path(path)
    reader = _FileReader(path)
    try:
        while True:
            yield from reader.drain()
            if not follow:
                break
            if not _rotated_away(reader.handle, path):
                time.sleep(poll_s)
                continue
            # Rotation happens after the writer's last write to this file: it is final now.
            yield from reader.drain()
            successor = _successor(path, os.fstat(reader.handle.fileno()).st_ino)
            reader.close()
            reader = _FileReader(successor)
        reader.finish()
    finally:
        reader.close()


class _FileReader:
    """Incremental reader of one open decision log file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.handle = path.open("rb")
        except OSError as exc:
            raise DecisionLogError(f"{path}: cannot open: {exc.strerror}") from exc
        self._unpacker = _new_unpacker()
        self._offset = 0
        self._bytes = 0
        self._header_seen = False

    def drain(self) -> Iterator[list[bytes]]:
        """Every complete record available now."""
        while chunk := self.handle.read(65536):
            self._bytes += len(chunk)
            self._unpacker.feed(chunk)
            try:
                for obj in self._unpacker:
                    position, self._offset = self._offset, self._unpacker.tell()
                    if not self._header_seen:
                        if not (isinstance(obj, dict) and obj.get(MAGIC_KEY) == FORMAT_VERSION):
                            raise DecisionLogError(
                                f"{self.path}: not an actionloop decision log (version {FORMAT_VERSION})"
                            )
                        self._header_seen = True
                        continue
                    if not (isinstance(obj, list) and obj and all(isinstance(p, bytes) for p in obj)):
                        raise DecisionLogError(f"{self.path}: record at byte {position} is not a list of message parts")
                    yield obj
            except DecisionLogError:
                raise
            except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as exc:
                raise DecisionLogError(f"{self.path}: corrupt record after byte {self._offset}: {exc}") from exc

    def finish(self) -> None:
        if not self._header_seen and self._bytes > 0:
            raise DecisionLogError(f"{self.path}: not an actionloop decision log (no complete header)")

    def close(self) -> None:
        self.handle.close()


def _successor(path: Path, inode: int) -> Path:
    """The file written right after the (rotated) file with this inode."""
    index = 1
    while (candidate := path.with_name(f"{path.name}.{index}")).exists():
        if candidate.stat().st_ino == inode:
            return path if index == 1 else path.with_name(f"{path.name}.{index - 1}")
        index += 1
    # Our file was deleted meanwhile (more than `keep` rotations behind): oldest one left.
    log.warning("decision log reader fell behind rotation; records may be missing", path=str(path))
    return rotated_paths(path)[0]


def _new_unpacker() -> msgpack.Unpacker:
    # Records are small; the cap stops a corrupt length field from asking for gigabytes.
    return msgpack.Unpacker(raw=False, max_buffer_size=64 * 1024 * 1024, strict_map_key=True)


def _rotated_away(handle: io.BufferedReader, path: Path) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False
