"""The files of one directory in acquisition order, each known by its identity, not its name.

A file is identified by (device, inode): a rename keeps the inode, so a ``.tmp`` that the
acquisition software renames to ``.tif`` at the end is recognised as the file already being
followed, and its frames are not published again. A copy is a new inode and so a new file
(write in place, or narrow the pattern to the names written in place). A file that gets
shorter was rewritten: it is followed again from its first page. A file that disappears is
forgotten.

Order: files in the order they appeared; files that appeared in the same scan (all those
present at start) in natural order of their names, which is numeric order for the counters
that ScanImage, ThorImage and Prairie View put in their names (``file_00009.tif`` before
``file_00010.tif``, and ``f9.tif`` before ``f10.tif`` too).

Cost: the newest file is looked at (stat) on every scan. The directory is listed on every
scan too while listing is cheap, and otherwise only as often as keeps listing under a tenth
of the time (`listing_share`, against a running average of the listing time, and at least
every `max_listing_gap_s`): listing 1,000 files takes about 0.7 ms here, so a folder that
large is listed about every 7 ms and new files in it are found up to that much later. In a
listing, a file is looked at while it changes, and only every `recheck_s` once it has been
unchanged for `quiet_after_s` (files the acquisition software has finished).
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that compares the runs of digits in a name as numbers."""
    parts = _DIGITS.split(name.lower())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


@dataclass(eq=False)
class WatchedFile:
    key: tuple[int, int]                 # (st_dev, st_ino)
    path: Path
    order: tuple[int, tuple[Any, ...]]   # (scan it appeared in, natural key of its first name)
    size: int
    mtime_ns: int
    changed_at: float = 0.0              # monotonic time of the last change seen
    next_look: float = 0.0               # no stat before this time (unless it is the newest file)
    state: Any = field(default=None)     # what the follower keeps about this file


class DirectoryWatch:
    def __init__(self, directory: str | os.PathLike[str], pattern: str = "*", *, quiet_after_s: float = 1.0,
                 recheck_s: float = 0.25, listing_share: float = 0.1, max_listing_gap_s: float = 0.1) -> None:
        self.directory = Path(directory)
        self.pattern = pattern
        self.quiet_after_s = quiet_after_s
        self.recheck_s = recheck_s
        self.listing_share = listing_share
        self.max_listing_gap_s = max_listing_gap_s
        self._listing_s: float | None = None  # running average of how long a listing takes
        self._next_listing = 0.0
        self.files: dict[tuple[int, int], WatchedFile] = {}
        self.ordered: list[WatchedFile] = []   # every file present, in acquisition order
        self._by_name: dict[str, WatchedFile] = {}
        self.scans = 0

    def scan(self, now: float | None = None) -> list[WatchedFile]:
        """The files that are new or changed (size or modification time) since the last scan, in order."""
        now = time.monotonic() if now is None else now
        newest = self.ordered[-1] if self.ordered else None
        if newest is not None and now < self._next_listing:
            grown = self._look_at(newest, now)
            if grown is not None:
                self.scans += 1
                return grown
        started = time.perf_counter()
        present: dict[tuple[int, int], WatchedFile] = {}
        changed: list[WatchedFile] = []
        match_all = self.pattern == "*"
        with os.scandir(self.directory) as entries:
            for entry in entries:
                name = entry.name
                if not (match_all or fnmatch.fnmatchcase(name, self.pattern)):
                    continue
                known = self._by_name.get(name)
                if known is not None and known is not newest and now < known.next_look:
                    present[known.key] = known  # finished a while ago: looked at again later
                    continue
                try:
                    if not entry.is_file():
                        continue
                    st = entry.stat()
                except OSError:  # removed or renamed since the listing
                    continue
                watched = self._update(entry, st, now, changed)
                present[watched.key] = watched
        membership = present.keys() != self.files.keys()
        self.files = present
        self._by_name = {f.path.name: f for f in present.values()}
        if membership or changed:
            self.ordered = sorted(present.values(), key=lambda f: f.order)
        self.scans += 1
        took = time.perf_counter() - started
        self._listing_s = took if self._listing_s is None else 0.8 * self._listing_s + 0.2 * took
        gap = self._listing_s * (1 - self.listing_share) / self.listing_share
        self._next_listing = now + min(gap, self.max_listing_gap_s)
        return sorted(changed, key=lambda f: f.order)

    def _look_at(self, watched: WatchedFile, now: float) -> list[WatchedFile] | None:
        """The newest file alone, between listings: [it] if it changed, [] if not, None to list now."""
        try:
            st = os.stat(watched.path)
        except OSError:
            return None  # renamed or removed: the listing will say which
        if (st.st_dev, st.st_ino) != watched.key or st.st_size < watched.size:
            return None
        if (st.st_size, st.st_mtime_ns) == (watched.size, watched.mtime_ns):
            return []
        watched.size, watched.mtime_ns = st.st_size, st.st_mtime_ns
        watched.changed_at = watched.next_look = now
        return [watched]

    def _update(self, entry: os.DirEntry[str], st: os.stat_result, now: float,
                changed: list[WatchedFile]) -> WatchedFile:
        key = (st.st_dev, st.st_ino)
        path = Path(entry.path)
        known = self.files.get(key)
        if known is not None and st.st_size < known.size:
            log.warning("file got shorter: following it again from its first page", path=str(path),
                        was_bytes=known.size, now_bytes=st.st_size)
            known = None
        if known is None:
            known = WatchedFile(key, path, (self.scans, natural_key(entry.name)), st.st_size, st.st_mtime_ns,
                                changed_at=now)
            changed.append(known)
        else:
            if known.path != path:
                log.info("file renamed: same file, already published frames are not sent again",
                         was=known.path.name, now=path.name)
                known.path = path
                known.changed_at = now
                changed.append(known)
            elif (st.st_size, st.st_mtime_ns) != (known.size, known.mtime_ns):
                known.changed_at = now
                changed.append(known)
            known.size, known.mtime_ns = st.st_size, st.st_mtime_ns
        quiet = now - known.changed_at >= self.quiet_after_s
        known.next_look = now + self.recheck_s if quiet else now
        return known
