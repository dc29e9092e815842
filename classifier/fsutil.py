"""Outputs that appear whole or not at all.

- :func:`atomic_file`: write beside the target, fsync, rename over it; a
  failure leaves the previous file untouched and the partial one under a
  ``.partial`` name that says so.
- :func:`replace_dir`: put a finished directory in place of another with one
  atomic exchange (Linux ``renameat2(RENAME_EXCHANGE)``), so the target
  never goes missing, even if the process is killed in the middle.
"""

import contextlib
import ctypes
import ctypes.util
import os
import shutil
from pathlib import Path

__all__ = ["atomic_file", "replace_dir", "swap_dirs", "recover_dir", "fsync_dir", "same_file"]


def fsync_dir(path):
    """Make a rename or a new entry in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def same_file(a, b):
    """True when paths ``a`` and ``b`` name one existing file (hard links and symlinks included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@contextlib.contextmanager
def atomic_file(path, mode="w", *, encoding="utf-8", newline=None):
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    On an exception the previous ``path`` is untouched and what was written
    is kept as ``path.partial`` (then the exception propagates).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    kwargs = {} if "b" in mode else {"encoding": encoding, "newline": newline}
    f = open(tmp, mode, **kwargs)
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        f.close()
        with contextlib.suppress(OSError):
            os.replace(tmp, path.with_name(path.name + ".partial"))
        raise


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a, b):
    """Swap two paths atomically; False where the system cannot."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        errno = ctypes.get_errno()
        if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: not on this file system
            return False
        raise OSError(errno, os.strerror(errno), str(b))
    return True


def _sync_tree(path):
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(root)


def replace_dir(new, target, *, keep=None):
    """Put directory ``new`` at ``target``; the old target goes to ``keep`` (or is deleted).

    ``new`` is fsynced first. Where the file system can exchange two names
    atomically the target is never absent; elsewhere two renames are used and
    :func:`recover_dir` puts the old one back after a crash between them.
    """
    new, target = Path(new), Path(target)
    _sync_tree(new)
    if not target.exists():
        os.rename(new, target)
    elif _exchange(new, target):
        pass  # new now holds the old target
    else:
        hold = target.with_name(f".{target.name}.old")
        shutil.rmtree(hold, ignore_errors=True)
        os.rename(target, hold)
        os.rename(new, target)
        os.rename(hold, new)
    fsync_dir(target.parent)
    if target.exists() and new.exists():
        if keep is not None:
            replace_dir(new, keep)
        else:
            shutil.rmtree(new)


def swap_dirs(a, b):
    """Exchange two existing directories: atomically where the file system can, else by renames :func:`recover_dir` can undo."""
    a, b = Path(a), Path(b)
    if not _exchange(a, b):
        hold = b.with_name(f".{b.name}.old")
        os.rename(b, hold)
        os.rename(a, b)
        os.rename(hold, a)
    fsync_dir(b.parent)


def recover_dir(target):
    """After a crash between the two renames of :func:`replace_dir`: put the old directory back."""
    target = Path(target)
    hold = target.with_name(f".{target.name}.old")
    if not target.exists() and hold.is_dir():
        os.rename(hold, target)
        fsync_dir(target.parent)
        return True
    return False
