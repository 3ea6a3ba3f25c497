"""Read the complete pages of a TIFF file that is still being written, a few at a time.

The reader walks the chain of image file directories (IFDs) itself, from where it stopped
last time, so each poll costs what is new rather than the whole file. A page counts as
complete only when every byte its IFD refers to is inside the file: the IFD's entries, the tag
values stored outside them, the pointer to the next IFD and every strip or tile. A page that
is not complete yet is left for the next poll: it is never returned twice and never returned
truncated. tifffile parses the IFD (`tifffile.TiffPage`) and decodes the pixels.

Writers differ in what they write first (tifffile points the previous IFD at the new one,
writes the data, then the IFD; others write the IFD first); both leave an incomplete page
that these checks see as incomplete, as long as the writer does not reserve space at the end
of the file before filling it in.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import tifffile

MAX_TAGS = 4096  # as tifffile: more entries in one IFD means the bytes are not an IFD

# Bytes per value of each TIFF field type (TIFF 6.0 and BigTIFF).
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
               16: 8, 17: 8, 18: 8}


class PageIncomplete(Exception):
    """The next page is not fully written yet: try again on the next poll."""


class TiffUnreadable(Exception):
    """The bytes are there but are not a readable TIFF (not a TIFF, a broken IFD chain, ...)."""


class NotATiff(TiffUnreadable):
    """The file does not start with a TIFF header."""


@dataclass(frozen=True)
class _Layout:
    """Classic TIFF or BigTIFF, and the byte order."""

    byteorder: str
    offset: struct.Struct      # an offset (pointer) field
    tagno: struct.Struct       # the entry count at the start of an IFD
    entry: struct.Struct       # code, type, count (the value/offset field follows)
    entry_size: int
    first_pointer: int         # where the header keeps the offset of the first IFD

    @classmethod
    def parse(cls, header: bytes) -> _Layout:
        if len(header) < 8:
            raise PageIncomplete("TIFF header not written yet")
        if header[:2] not in (b"II", b"MM"):
            raise NotATiff(f"not a TIFF file (starts with {header[:4]!r})")
        bo = "<" if header[:2] == b"II" else ">"
        version = struct.unpack(bo + "H", header[2:4])[0]
        if version == 42:
            return cls(bo, struct.Struct(bo + "I"), struct.Struct(bo + "H"), struct.Struct(bo + "HHI"), 12, 4)
        if version == 43:
            if len(header) < 16:
                raise PageIncomplete("BigTIFF header not written yet")
            return cls(bo, struct.Struct(bo + "Q"), struct.Struct(bo + "Q"), struct.Struct(bo + "HHQ"), 20, 8)
        raise NotATiff(f"not a TIFF file (version {version}, expected 42 or 43)")


class TiffTail:
    """The pages of one TIFF file not yet read; `read_new` returns each complete one once."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.pages_read = 0
        self._layout: _Layout | None = None
        self._pointer_pos = 0          # where the offset of the next unread IFD is stored
        self._seen: set[int] = set()   # IFD offsets already read: a chain that loops is broken
        self.waiting = False           # the last read stopped at a page not complete yet

    def read_new(self, expect_inode: int | None = None,
                 wanted: Callable[[int], bool] | None = None) -> Iterator[tuple[int, tifffile.TiffPage | None]]:
        """Yield (page index, page) for each complete page not yet read, then stop.

        A page that `wanted(index)` declines is passed over without being parsed, as
        (index, None), once the next page's IFD is there (its writer has moved on); that keeps
        reading past thousands of pages cheap (the pages already there when the bridge starts,
        the other channels).

        Pixels must be decoded (``page.asarray()``) before asking for the next page: the file
        is closed when the iteration ends. Stops quietly at a page that is not complete yet;
        raises `TiffUnreadable` for bytes that are present but invalid, and `OSError` if the
        file went away. A page is counted as read when it is yielded. Afterwards `waiting` says
        whether the read stopped at a page that is not complete yet (rather than at the end).
        """
        with open(self.path, "rb") as fh:
            stat = os.fstat(fh.fileno())
            if expect_inode is not None and stat.st_ino != expect_inode:
                return  # the name now belongs to another file; the directory scan sorts it out
            size = stat.st_size
            tif: tifffile.TiffFile | None = None
            try:
                while True:
                    self.waiting = True
                    try:
                        located = self._next_ifd(fh, size)
                    except PageIncomplete:
                        return
                    if located is None:
                        self.waiting = False
                        return
                    ifd, next_pointer = located
                    index = self.pages_read
                    if wanted is not None and not wanted(index) and self._pointer_at(fh, next_pointer) != 0:
                        self._seen.add(ifd)
                        self._pointer_pos = next_pointer
                        self.pages_read += 1
                        yield index, None
                        continue
                    if tif is None:
                        tif = _open_tifffile(fh)
                    page = self._parse(tif, fh, ifd, size)
                    if page is None:
                        return
                    self._seen.add(ifd)
                    self._pointer_pos = next_pointer
                    self.pages_read += 1
                    yield index, page
            finally:
                if tif is not None:
                    tif.close()

    def _pointer_at(self, fh: BinaryIO, position: int) -> int:
        assert self._layout is not None
        fh.seek(position)
        return int(self._layout.offset.unpack(fh.read(self._layout.offset.size))[0])

    def _next_ifd(self, fh: BinaryIO, size: int) -> tuple[int, int] | None:
        """(offset of the next IFD, position of its own next-IFD pointer), or None if there is none yet."""
        if self._layout is None:
            fh.seek(0)
            self._layout = _Layout.parse(fh.read(16))
            self._pointer_pos = self._layout.first_pointer
        lay = self._layout
        if self._pointer_pos + lay.offset.size > size:
            raise PageIncomplete("next-IFD pointer not written yet")
        fh.seek(self._pointer_pos)
        ifd = lay.offset.unpack(fh.read(lay.offset.size))[0]
        if ifd == 0:
            return None
        if ifd in self._seen or ifd < lay.first_pointer + lay.offset.size:
            raise TiffUnreadable(f"IFD chain is broken (page {self.pages_read} points to offset {ifd})")
        if ifd + lay.tagno.size > size:
            raise PageIncomplete("IFD not written yet")
        fh.seek(ifd)
        count = lay.tagno.unpack(fh.read(lay.tagno.size))[0]
        if count == 0:
            raise PageIncomplete("IFD not written yet (zero entries)")
        if count > MAX_TAGS:
            raise TiffUnreadable(f"page {self.pages_read}: {count} IFD entries (corrupt IFD)")
        entries_end = ifd + lay.tagno.size + count * lay.entry_size
        if entries_end + lay.offset.size > size:
            raise PageIncomplete("IFD entries not written yet")
        raw = fh.read(count * lay.entry_size)
        head = lay.entry.size
        for i in range(count):
            entry = raw[i * lay.entry_size:(i + 1) * lay.entry_size]
            _code, kind, n = lay.entry.unpack(entry[:head])
            nbytes = _TYPE_SIZES.get(kind, 0) * n
            if nbytes > lay.offset.size:  # the value lives elsewhere in the file
                where = lay.offset.unpack(entry[head:])[0]
                if where + nbytes > size:
                    raise PageIncomplete("tag values not written yet")
        return ifd, entries_end

    def _parse(self, tif: tifffile.TiffFile, fh: BinaryIO, ifd: int, size: int) -> tifffile.TiffPage | None:
        """The page at `ifd`, or None if its image data is not all in the file yet."""
        tif.filehandle.seek(ifd)
        try:
            page = tifffile.TiffPage(tif, index=self.pages_read)
        except (tifffile.TiffFileError, ValueError, struct.error, KeyError, IndexError) as exc:
            raise TiffUnreadable(f"page {self.pages_read}: {type(exc).__name__}: {exc}") from None
        if not page.dataoffsets:
            raise TiffUnreadable(f"page {self.pages_read} holds no image data")
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
            if offset + count > size:
                return None
        return page


def _open_tifffile(fh: BinaryIO) -> tifffile.TiffFile:
    fh.seek(0)
    try:
        return tifffile.TiffFile(fh)
    except (tifffile.TiffFileError, ValueError, struct.error, KeyError, IndexError) as exc:
        raise TiffUnreadable(f"{type(exc).__name__}: {exc}") from None
