"""Reading JSON with errors a person can act on, and writing files atomically.

Atomic = write a temporary file in the destination folder, then `os.replace` it over the target: a reader (or
a crash) never sees half a file, and a failed conversion leaves the previous output untouched.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from workbench.data.problems import DataError, Problem

__all__ = ["data_record", "read_json", "write_bytes_atomic", "write_folder_atomic", "write_json_atomic"]


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a syntax error becomes a `DataError` naming file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate the byte-order mark some Windows editors add
    except FileNotFoundError:
        raise DataError([Problem("missing_file", str(path), "file not found")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError([Problem("unreadable_file", str(path), f"cannot read: {e}")]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        where = f"{path}:{e.lineno}:{e.colno}"
        raise DataError([Problem("json_syntax", where, f"invalid JSON: {e.msg}")]) from None


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file (through links, `..` and hard links when both exist)."""
    a, b = Path(a), Path(b)
    try:
        return a.samefile(b)
    except OSError:
        return a.resolve() == b.resolve()


def refuse_output_alias(out: str | os.PathLike, inputs, command: str) -> None:
    """A `UsageError` naming both paths when the output `out` is one of `inputs`: writing it would destroy
    the data being read."""
    from workbench.errors import UsageError

    for source in inputs:
        if same_file(out, source):
            raise UsageError(f"{command}: the output {out} is the input {source}; writing it would replace the "
                             "data being read: choose another output path")


def data_record(path: str | os.PathLike) -> dict[str, str]:
    """{"path": absolute path, "sha256": of the file's bytes}: which data a metric was computed on."""
    import hashlib

    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path.resolve()), "sha256": digest.hexdigest()}


def remove_stale_temps(folder: str | os.PathLike, pattern: str = ".*.tmp") -> list[Path]:
    """Delete the temporary files (`.<name>.*.tmp`) that a killed atomic write (`write_bytes_atomic`, a
    checkpoint save) left in `folder`; `pattern` narrows them to one output's. Call only when no other process
    writes there (before writing again, when a run starts). Returns what was removed."""
    stale = [p for p in Path(folder).glob(pattern) if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600; the result should look like any other file
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _file_mode(path: Path) -> int:
    """The existing file's permissions, else what `open()` would give under the current umask."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    """Serialise first (so an unserialisable object never touches the disk), then write atomically."""
    data = json.dumps(obj, indent=indent, ensure_ascii=False).encode("utf-8")
    write_bytes_atomic(path, data)


def write_folder_atomic(path: str | os.PathLike, fill: Callable[[Path], None], markers: tuple[str, ...]) -> None:
    """Build a whole output folder in a temporary sibling (`fill(tmp)`), then rename it to `path`: on any error
    nothing is left behind and an earlier output stays as it was. An existing `path` is replaced only when it
    is empty or an earlier output (it holds every one of `markers`), so a user's other folder is never deleted."""
    from workbench.data.problems import DataError, Problem

    path = Path(path)
    ours = path.is_dir() and (not any(path.iterdir()) or all((path / m).exists() for m in markers))
    if path.exists() and not ours:
        raise DataError([Problem("output_exists", str(path), f"exists and is not an earlier output (no "
                                 f"{' + '.join(markers)}); choose a new folder or remove it")])
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = None
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the result should look like any other folder
        fill(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old.tmp", dir=path.parent))
            os.replace(path, old / "previous")
        os.replace(tmp, path)
    except BaseException:
        if old is not None and (old / "previous").exists() and not path.exists():
            os.replace(old / "previous", path)  # put the earlier output back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
