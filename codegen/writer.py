"""The one place codegen writes files: atomically, so nothing is left half."""

import os
import tempfile
from pathlib import Path


def write_atomic(path, text: str) -> None:
    """Replaces ``path`` with ``text`` in one step.

    The text goes to a temporary file in the same folder, is flushed to disk, and
    then takes the old file's place with ``os.replace``; a failure at any point
    leaves the old file whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    # mkstemp makes the file private (0600); a module should read like any other.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
