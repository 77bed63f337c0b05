"""Reading the small text files datasets come with (lists, label maps, box files)."""

from __future__ import annotations

from pathlib import Path

from mlt.errors import InputError


def read_text(path: Path, what: str = "file") -> str:
    """Returns the UTF-8 text of ``path`` (a BOM is dropped); InputError names a missing or
    undecodable file, ``what`` saying what it should have been."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(
            path, None, str(path), f"an existing {what}", kind="missing file"
        ) from None
    except UnicodeDecodeError as e:
        raise InputError(
            path,
            f"byte {e.start}",
            e.object[e.start : e.start + 8],
            "UTF-8 text",
            kind="bad encoding",
        ) from None
