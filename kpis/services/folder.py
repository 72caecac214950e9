"""The input folder seen cheaply: each contract file's name, closing time, size and mtime.

A run compares these plain tuples with the ledger's fingerprints; the pipeline's
:class:`~kpis.pipeline.InputFile` objects are made only for the intervals it reads,
so a run with nothing new over a long history costs one ``stat`` and one dictionary
lookup per file.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from kpis.pipeline import INTERVAL, InputFile, parse_file_name

logger = logging.getLogger("kpis.update")

_INTERVAL_MS = int(INTERVAL.total_seconds() * 1000)


class FolderEntry(NamedTuple):
    """A contract file in the input folder, as ``stat`` sees it."""

    name: str
    epoch_ms: int
    size: int
    mtime_ns: int

    @property
    def interval_key(self) -> int:
        """The file's interval as a number: equal for the files of one interval, increasing."""
        return self.epoch_ms // _INTERVAL_MS

    def interval_end_ms(self) -> int:
        """The end of the file's interval, in epoch milliseconds (see the input contract)."""
        return self.interval_key * _INTERVAL_MS

    def input_file(self, directory: Path) -> InputFile:
        return InputFile(
            name=self.name,
            path=directory / self.name,
            epoch_ms=self.epoch_ms,
            size=self.size,
            mtime_ns=self.mtime_ns,
        )


def folder_list(directory: Path) -> list[FolderEntry]:
    """Every contract file in ``directory``, in no particular order.

    Same rules as :func:`kpis.pipeline.scan_input_dir`: other names are ignored,
    and so are symbolic links and anything that is not a regular file.
    """
    found: list[FolderEntry] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            epoch_ms = parse_file_name(entry.name)
            if epoch_ms is None:
                continue
            if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
                logger.warning(
                    "Skipping %s: not a regular file (links are not followed)", entry.name
                )
                continue
            try:
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed between listing and stat
            found.append(FolderEntry(entry.name, epoch_ms, stat.st_size, stat.st_mtime_ns))
    return found


def input_files(entries: list[FolderEntry], directory: Path) -> list[InputFile]:
    """The pipeline's view of ``entries``, oldest interval first."""
    return [
        entry.input_file(directory) for entry in sorted(entries, key=lambda e: (e.epoch_ms, e.name))
    ]


def epoch_ms_of(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
