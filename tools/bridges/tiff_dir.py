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
"""

from __future__ import annotations

import fnmatch
import os
import re
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


@dataclass
class WatchedFile:
    key: tuple[int, int]                 # (st_dev, st_ino)
    path: Path
    order: tuple[int, tuple[Any, ...]]   # (scan it appeared in, natural key of its first name)
    size: int
    mtime_ns: int
    state: Any = field(default=None)     # what the follower keeps about this file


class DirectoryWatch:
    def __init__(self, directory: str | os.PathLike[str], pattern: str = "*") -> None:
        self.directory = Path(directory)
        self.pattern = pattern
        self.files: dict[tuple[int, int], WatchedFile] = {}
        self.scans = 0

    def scan(self) -> list[WatchedFile]:
        """Every matching regular file now present, in acquisition order."""
        present: dict[tuple[int, int], WatchedFile] = {}
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if not fnmatch.fnmatchcase(entry.name, self.pattern):
                    continue
                try:
                    if not entry.is_file():
                        continue
                    st = entry.stat()
                except OSError:  # removed or renamed since the listing
                    continue
                key = (st.st_dev, st.st_ino)
                path = Path(entry.path)
                known = self.files.get(key)
                if known is not None and st.st_size < known.size:
                    log.warning("file got shorter: following it again from its first page", path=str(path),
                                was_bytes=known.size, now_bytes=st.st_size)
                    known = None
                if known is None:
                    known = WatchedFile(key, path, (self.scans, natural_key(entry.name)), st.st_size, st.st_mtime_ns)
                elif known.path != path:
                    log.info("file renamed: same file, already published frames are not sent again",
                             was=known.path.name, now=path.name)
                    known.path = path
                known.size, known.mtime_ns = st.st_size, st.st_mtime_ns
                present[key] = known
        self.files = present
        self.scans += 1
        return sorted(present.values(), key=lambda f: f.order)
