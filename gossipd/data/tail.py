"""New examples since last time, from a CSV file or a directory that keeps growing.

:meth:`SourceTail.poll` returns the rows that appeared since the previous poll
(the first poll returns everything there is), so a driver can call it on a
timer and hand the rows to an :class:`~gossipd.data.store.ExampleStore`.

- A CSV file is read from where the last poll stopped, up to its last complete
  line (a writer's half-written last line waits for the next poll). A file
  that became shorter was rewritten: it is read again from its header.
- In a directory, new ``*.csv`` / ``*.npz`` files are read whole, CSV files
  already seen are followed as above. An NPZ file is read once, when it
  appears (write a new file rather than change one). Names starting with
  ``.`` are skipped, so writers can fill ``.part`` files and rename them.

Every file must have the columns of the first one (``feature_names``). Reads
files only; no clock, no threads.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from gossipd.data.examples import DataError, Examples
from gossipd.data.sources import FILE_SUFFIXES, concat, data_files, label_index, parse_csv_rows, read_npz


@dataclass
class _CsvState:
    offset: int = 0  # bytes consumed, always just after a newline
    line: int = 0  # lines consumed (for error messages)
    header: list[str] = field(default_factory=list)
    label: int = -1


class SourceTail:
    """Follows one CSV file, or a directory of CSV and NPZ files."""

    def __init__(self, path: str | Path, *, label_column: str | None = None,
                 feature_names: tuple[str, ...] = ()) -> None:
        self.path = Path(path)
        self.label_column = label_column
        self.feature_names = tuple(feature_names)
        self._csv: dict[Path, _CsvState] = {}
        self._npz: set[Path] = set()
        if not self.path.is_dir() and self.path.suffix.lower() != ".csv":
            raise DataError(f"{self.path}: can follow a .csv file or a directory, not this")

    def poll(self) -> Examples | None:
        """Rows added since the last poll, or None if there are none."""
        if self.path.is_dir():
            files = data_files(self.path)
        elif self.path.is_file():
            files = [self.path]
        else:
            raise DataError(f"{self.path}: not found")
        parts = []
        for f in files:
            ex = self._read_new(f)
            if ex is not None and len(ex):
                self._check_columns(ex, f)
                parts.append(ex)
        if not parts:
            return None
        return concat(self.path.name, parts, str(self.path))

    def _check_columns(self, ex: Examples, f: Path) -> None:
        names = ex.feature_names
        if not self.feature_names:
            self.feature_names = names
        elif names and names != self.feature_names:
            raise DataError(f"{f}: columns {', '.join(names)} differ from {', '.join(self.feature_names)}")

    def _read_new(self, f: Path) -> Examples | None:
        if f.suffix.lower() == ".npz":
            if f in self._npz:
                return None
            self._npz.add(f)
            return read_npz(f)
        assert f.suffix.lower() in FILE_SUFFIXES
        return self._read_csv_tail(f)

    def _read_csv_tail(self, f: Path) -> Examples | None:
        st = self._csv.setdefault(f, _CsvState())
        size = f.stat().st_size
        if size < st.offset:  # rewritten from scratch
            st = self._csv[f] = _CsvState()
        if size == st.offset:
            return None
        with f.open("rb") as fh:
            fh.seek(st.offset)
            chunk = fh.read(size - st.offset)
        end = chunk.rfind(b"\n")
        if end < 0:
            return None  # no complete line yet
        try:
            lines = chunk[: end + 1].decode().splitlines()
        except UnicodeDecodeError:
            raise DataError(f"{f}: not a text (UTF-8) file") from None
        first = st.line
        st.offset += end + 1
        st.line += len(lines)
        rows = list(csv.reader(lines))
        if not st.header:
            if not rows:
                return None
            st.header = [h.strip() for h in rows[0]]
            st.label = label_index(st.header, self.label_column, str(f))
            rows, first = rows[1:], first + 1
        X, y = parse_csv_rows(((first + 1 + i, r) for i, r in enumerate(rows)), st.header, st.label, str(f))
        names = tuple(h for j, h in enumerate(st.header) if j != st.label)
        return Examples(f.stem, X, y, feature_names=names) if len(y) else None
