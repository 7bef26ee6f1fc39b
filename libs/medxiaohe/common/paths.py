"""Files that a data set names, read from where the data set lies and nowhere else."""

from __future__ import annotations

from pathlib import Path

from medxiaohe.common.errors import InvalidInput


def file_in(folder: Path, name: str) -> Path:
    """``folder / name`` when ``name`` is a relative path that stays inside ``folder``: a
    crafted data set naming ``../../etc/shadow``, an absolute path, or a link out of the
    folder gets InvalidInput, so nothing outside it is read (and sent to a model)."""
    relative = Path(name)
    if not name or "\x00" in name or relative.is_absolute() or ".." in relative.parts:
        raise InvalidInput(f"file name {name[:80]!r} must be a relative path inside its data set")
    found = (folder / relative).resolve()
    if not found.is_relative_to(folder.resolve()):
        raise InvalidInput(f"file {name[:80]!r} links outside its data set")
    return found
