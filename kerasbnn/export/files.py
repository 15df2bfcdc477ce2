"""Writing the `.tflite` file: checked before any slow work, replaced atomically at the end.

A conversion takes seconds to minutes; `check_writable` fails at once on a path that could
never be written, and `write_atomically` leaves an existing file untouched unless the new one
is complete.
"""

import os
import tempfile

__all__ = ["check_writable", "write_atomically"]


def check_writable(path, what="the .tflite file"):
    """Checks, before any slow work, that a file can be written at `path`.

    Args:
        path: the destination file.
        what: how messages name the file.

    Returns:
        The absolute path.

    Raises:
        ValueError: `path` is empty, a directory, or its folder does not exist.
        PermissionError: the existing file is read-only or the folder is not writable.
    """
    if path is None or not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"path must be a file path such as 'model.tflite', received {path!r}.")
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise ValueError(
            f"Cannot write {what} to {path}: it is a directory; give a file name."
        )
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise ValueError(
            f"Cannot write {what} to {path}: the folder {parent} does not exist "
            f"(or is not a folder); create it first."
        )
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise PermissionError(
            f"Cannot write {what} to {path}: the existing file is read-only."
        )
    # os.access is always true for root; creating a file is the real test.
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".kerasbnn_probe_")
    except OSError as error:
        raise PermissionError(
            f"Cannot write {what} to {path}: the folder {parent} is not writable "
            f"({error.strerror})."
        ) from error
    os.close(fd)
    os.remove(probe)
    return path


def write_atomically(path, data):
    """Writes `data` to a temporary file next to `path`, syncs it, then renames it to `path`:
    a reader sees the old file or the new one, never a partial one."""
    parent = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
