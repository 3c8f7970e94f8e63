"""The videos of a corpus: files, folders (searched recursively by video suffix) and manifests.

A manifest is a ``.txt`` file (one path per line; blank lines and ``#`` comments skipped) or a
``.csv`` file with a ``path`` column; its relative paths resolve against its own folder. Videos
are identified by their resolved absolute path; one named twice is extracted once, at its first
place. A named file that does not exist is still a video (it gets an error row); a folder without
videos, a missing or empty manifest, or no inputs at all is a usage error.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import SurgeryError

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts",
                            ".m2ts", ".wmv", ".flv", ".3gp", ".ogv"})
MANIFEST_SUFFIXES = frozenset({".txt", ".csv"})
_MANIFEST_HINT = "a manifest is a .txt file with one video path per line, or a .csv file with a 'path' column"


def collect_videos(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """The videos ``inputs`` name, in order, as resolved absolute paths without duplicates.

    Raises:
        SurgeryError: no inputs, a folder with no videos, a missing, unreadable or empty manifest.
    """
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise SurgeryError("no inputs: name video files, folders or manifests",
                           hint="e.g. sfsurgery extract model.safetensors videos/ -o features.parquet")
    seen: dict[Path, None] = {}
    for item in inputs:
        for video in _expand(item):
            seen.setdefault(video.resolve(), None)
    return list(seen)


def _expand(item: Path) -> list[Path]:
    if item.is_dir():
        return _folder(item)
    if item.suffix.lower() in MANIFEST_SUFFIXES:
        return _manifest(item)
    return [item]  # a video, or a file that will get an error row (missing, not a video)


def _folder(folder: Path) -> list[Path]:
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not found:
        raise SurgeryError(f"{folder} holds no videos (searched recursively for "
                           f"{', '.join(sorted(VIDEO_SUFFIXES))})",
                           hint="pass the folder your videos are in, or list them in a .txt manifest")
    return found


def _manifest(path: Path) -> list[Path]:
    if not path.is_file():
        raise SurgeryError(f"no such manifest: {path}", hint=f"check the path; {_MANIFEST_HINT}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SurgeryError(f"cannot read manifest {path} ({exc})", hint=_MANIFEST_HINT) from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines(), skipinitialspace=True)
        fields = [name.strip() for name in reader.fieldnames or []]
        if "path" not in fields:
            raise SurgeryError(f"manifest {path.name} has no 'path' column (columns: {', '.join(fields) or 'none'})",
                               hint=_MANIFEST_HINT)
        reader.fieldnames = fields
        entries = [(row.get("path") or "").strip() for row in reader]
    else:
        entries = [line.strip() for line in text.splitlines()]
        entries = [e for e in entries if not e.startswith("#")]
    entries = [e for e in entries if e]
    if not entries:
        raise SurgeryError(f"manifest {path} lists no videos", hint=_MANIFEST_HINT)
    videos: list[Path] = []
    for entry in entries:
        target = Path(os.path.expanduser(entry))
        target = target if target.is_absolute() else path.parent / target
        videos.extend(_folder(target) if target.is_dir() else [target])
    return videos
