"""Output paths of the command lines: refusals, temporary names, atomic replacement, file modes.

Every CLI that writes (data_prep/*.py, python -m flexbert.export / .sweep / .finetune /
.retrieval) goes through these rules:

* An output that is, lies inside, or contains one of the run's inputs (the corpus, the
  tokenizer, the checkpoint, ...) is refused before any work, naming both paths: replacing it
  would destroy the input. So is a plain file where a folder is expected (and a folder where a
  file is expected), and a path that cannot be created (its parent is a file, or not writable).
* A folder is built as ``.NAME.tmp-PID-XXXXXXXX`` beside ``NAME`` and renamed when complete; a
  file is written as ``.NAME.tmp-PID-XXXXXXXX`` and renamed. A replaced folder is swapped out
  atomically (Linux ``renameat2(RENAME_EXCHANGE)``), so ``NAME`` always holds either the old or
  the new output; the old one then sits under the temporary name until it is deleted. Where the
  exchange is unsupported the old folder is moved to ``.NAME.old-PID-XXXXXXXX`` first, moved
  back if the second rename fails, and, after a kill between the two renames, restored by the
  next run (recoverable, never lost).
* Leftovers of killed runs (``.NAME.tmp-PID-*`` / ``.NAME.old-PID-*``, and the older
  ``NAME.tmp-PID`` / ``NAME.old-PID`` names) whose process is gone are removed by the next run
  writing ``NAME``, with one log line; those of a live process are never touched.
* Folders get mode 0o777 and files 0o666 (0o777 when executable), less the user's umask: files
  are created that way, and an output folder's files are set so before it is renamed into place
  (safetensors' ``save_file`` and ``tempfile.mkstemp`` create 0o600 files whatever the umask).

This module imports nothing from flexbert, so every layer can use it.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import re
import shutil
import stat
import uuid
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Optional, Tuple, Union

__all__ = [
    "OutputError",
    "check_output_dir",
    "check_output_file",
    "atomic_output_dir",
    "prepare_output_dir",
    "install_output_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_file",
    "atomic_symlink",
    "set_aside",
    "remove_stale",
    "pid_alive",
]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
# (label, path): the label is how the user named the input, e.g. "--tokenizer"; None paths are skipped.
Inputs = Iterable[Tuple[str, Optional[PathLike]]]


class OutputError(ValueError):
    """An output path that cannot or must not be written; the message names the paths and the fix."""


def _labelled(inputs: Inputs) -> list[tuple[str, str]]:
    out = []
    for label, value in inputs:
        if value is None or value == "":
            continue
        if isinstance(value, (list, tuple)):
            out += [(label, str(v)) for v in value if v not in (None, "")]
        else:
            out.append((label, str(value)))
    return out


def _check_inputs(out: Path, name: str, inputs: Inputs) -> None:
    """Refuse an output that is an input, lies inside one, or contains one."""
    real_out = out.resolve()
    for label, given in _labelled(inputs):
        real_in = Path(given).resolve()
        if real_out == real_in:
            raise OutputError(f"{name} {out} is the same path as {label} {given}: writing it would destroy that "
                              f"input; choose another {name}")
        if real_out.is_relative_to(real_in):
            raise OutputError(f"{name} {out} is inside {label} {given}: the output would be written into that "
                              f"input; choose a {name} outside it")
        if real_in.is_relative_to(real_out):
            raise OutputError(f"{name} {out} contains {label} {given}: writing {out} could delete or overwrite "
                              f"that input; choose another {name}")


def _check_creatable(out: Path, name: str) -> None:
    """The nearest existing ancestor of `out` must be a folder we can write in (checked before any work)."""
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot create {name} {out}: {parent} is a file, not a folder; choose another {name}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot create {name} {out}: no permission to write in {parent} (or it is on a "
                          f"read-only file system); choose another {name}")


def check_output_dir(output: PathLike, *, inputs: Inputs = (), overwrite: bool = False, replaces: bool = True,
                     name: str = "--output") -> Path:
    """Check a folder output before any work is done; returns it as a Path.

    Leftovers of dead processes beside it are removed first (:func:`remove_stale`).

    Args:
        output: the folder to write.
        inputs: (label, path) pairs the run reads; `output` may not be, contain or lie inside one.
        overwrite: with `replaces`, an existing non-empty folder may be replaced.
        replaces: True when the run replaces the whole folder (data prep, export); False when it
            only adds files to it (results.json of fine-tuning, a sweep's report).
        name: how the user named the output, for messages.

    Raises:
        OutputError: one line naming the paths and what to change.
    """
    out = Path(output)
    _check_inputs(out, name, inputs)
    remove_stale(out)  # first: an output restored from a killed replacement counts as existing
    if out.exists() and not out.is_dir():
        raise OutputError(f"{name} {out} is a file, not a folder; remove it or choose another {name}")
    if replaces and out.is_dir() and not overwrite and any(out.iterdir()):
        raise OutputError(f"{name} {out} already exists; pass --overwrite to replace it")
    if out.is_dir():
        folders = [out, out.absolute().parent] if replaces else [out]
        if not all(os.access(f, os.W_OK | os.X_OK) for f in folders):
            raise OutputError(f"cannot write {name} {out}: no permission (or a read-only file system); "
                              f"choose another {name}")
    else:
        _check_creatable(out, name)
    return out


def check_output_file(output: PathLike, *, inputs: Inputs = (), name: str = "--output") -> Path:
    """Check a file output before any work: not an input, not a folder, creatable. Returns it as a Path."""
    out = Path(output)
    _check_inputs(out, name, inputs)
    if out.is_dir():
        raise OutputError(f"{name} {out} is a folder, not a file; choose a file name")
    _check_creatable(out, name)
    return out


# --- process-tagged temporary names -----------------------------------------------------------
def _tag() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _temp_name(out: Path, kind: str) -> Path:
    return out.parent / f".{out.name}.{kind}-{_tag()}"


def _stale_pattern(name: str) -> re.Pattern:
    # .NAME.tmp-PID-HEX (ours), NAME.tmp-PID (data_prep before), .NAME.tmp-PID-HEX also for .old
    return re.compile(rf"^\.?{re.escape(name)}\.(tmp|old)-(\d+)(?:-[0-9a-f]+)?$")


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists (ours included); a process of another user counts."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except (OverflowError, ValueError, OSError):
        return False  # not a possible process id
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def remove_stale(output: PathLike) -> list[Path]:
    """Remove leftovers of dead processes beside `output` (their temporary and moved-aside names).

    A moved-aside `.old-` folder of a dead process is put back as `output` when `output` is
    missing (a kill between the two renames of a replacement). Leftovers of live processes are
    kept. Logs one line when something was removed or restored; returns the removed paths.
    """
    out = Path(output)
    parent = out.absolute().parent
    if not parent.is_dir():
        return []
    pattern = _stale_pattern(out.name)
    removed: list[Path] = []
    restored: Optional[Path] = None
    for entry in sorted(parent.iterdir()):
        m = pattern.match(entry.name)
        if not m:
            continue
        pid = int(m.group(2))
        if pid_alive(pid):
            log.debug("keeping %s: process %d is running", entry, pid)
            continue
        if m.group(1) == "old" and restored is None and not os.path.lexists(out):
            try:
                os.rename(entry, out)
                restored = entry
                continue
            except OSError as e:
                log.warning("cannot restore %s from %s: %s", out, entry, e)
        try:
            _remove(entry)
        except OSError as e:
            log.warning("cannot remove %s, left by process %d that is gone: %s", entry, pid, e)
            continue
        removed.append(entry)
    if restored is not None:
        log.warning("restored %s from %s, moved aside by a run that was killed while replacing it", out, restored.name)
    if removed:
        log.warning("removed %d leftover(s) of interrupted runs beside %s (their processes are gone): %s",
                    len(removed), out, ", ".join(p.name for p in removed))
    return removed


# --- modes ------------------------------------------------------------------------------------
def current_umask() -> int:
    """The process umask (read from /proc on Linux, else set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _normalise_modes(folder: Path) -> None:
    """Give every file 0o666 (0o777 if executable by its owner) and every folder 0o777, less the umask.

    Some writers create private files whatever the umask (safetensors' save_file, tempfile.mkstemp:
    0o600); an output folder's files are for whoever the umask lets read them.
    """
    mask = current_umask()
    paths = [str(folder)]
    for root, dirs, files in os.walk(folder):
        paths += [os.path.join(root, name) for name in dirs + files]
    for p in paths:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            continue
        want = (0o777 if stat.S_ISDIR(st.st_mode) or st.st_mode & stat.S_IXUSR else 0o666) & ~mask
        if stat.S_IMODE(st.st_mode) != want:
            os.chmod(p, want)


# --- replacing a folder -----------------------------------------------------------------------
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_renameat2 = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap `a` and `b` atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    global _renameat2
    if _renameat2 is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _renameat2 = fn
        except (AttributeError, OSError):
            _renameat2 = False
    if not _renameat2:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # e.g. a file system without exchange
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def install_output_dir(tmp: PathLike, output: PathLike) -> None:
    """Make the finished folder `tmp` (from :func:`prepare_output_dir`) the output, replacing an old one."""
    tmp, out = Path(tmp), Path(output).absolute()
    _normalise_modes(tmp)
    if not os.path.lexists(out):
        os.rename(tmp, out)
        return
    if _exchange(tmp, out):
        # `tmp` now holds the old output; a kill here leaves a dead process's .tmp-, removed next time.
        try:
            _remove(tmp)
        except OSError as e:
            log.warning("replaced %s, but cannot remove the old version in %s: %s", out, tmp, e)
        return
    old = _temp_name(out, "old")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)  # put the old output back; the caller removes tmp
        raise
    try:
        _remove(old)
    except OSError as e:
        log.warning("replaced %s, but cannot remove the old version in %s: %s", out, old, e)


def prepare_output_dir(output: PathLike, *, inputs: Inputs = (), overwrite: bool = False,
                       name: str = "--output") -> Path:
    """Check `output` (:func:`check_output_dir`, which also removes dead runs' leftovers) and
    return a new empty temporary folder beside it. Finish with :func:`install_output_dir`, or
    delete the folder on failure; :func:`atomic_output_dir` does both."""
    out = check_output_dir(output, inputs=inputs, overwrite=overwrite, name=name)
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(out.absolute(), "tmp")
    tmp.mkdir()  # 0o777 less the umask
    return tmp


@contextlib.contextmanager
def atomic_output_dir(output: PathLike, *, inputs: Inputs = (), overwrite: bool = False,
                      name: str = "--output") -> Iterator[Path]:
    """Yield an empty temporary folder beside `output`; on success it becomes `output`.

    Any exception inside the block (Ctrl-C included) deletes the temporary folder and leaves an
    existing `output` untouched. The checks of :func:`check_output_dir` run first, then
    leftovers of dead processes beside `output` are removed.
    """
    tmp = prepare_output_dir(output, inputs=inputs, overwrite=overwrite, name=name)
    try:
        yield tmp
        install_output_dir(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- writing a file ---------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_file(path: PathLike, *, text: bool = True, mode: int = 0o666) -> Iterator[IO]:
    """Yield a file open for writing under a temporary name beside `path`; on success it becomes `path`.

    For streaming writes (one line at a time) that should still appear whole or not at all:
    any exception inside the block deletes the temporary file and leaves a previous `path` as it
    was. `text` opens it as UTF-8 text, else binary. The file gets `mode` less the umask (0o666:
    rw for whom the umask allows; 0o777 for scripts). The folder is created when missing.
    """
    path = Path(path)
    path.absolute().parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = _temp_name(path.absolute(), "tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: PathLike, data: bytes, *, mode: int = 0o666) -> None:
    """Write `data` to `path` through a temporary file beside it, then rename (:func:`atomic_file`).

    A reader never sees a half-written file, and an interrupted write leaves the previous
    version in place.
    """
    with atomic_file(path, text=False, mode=mode) as f:
        f.write(data)


def atomic_write_text(path: PathLike, text: str, *, mode: int = 0o666) -> None:
    """Atomic UTF-8 text write; see :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def atomic_write_json(path: PathLike, obj: Any, *, sort_keys: bool = False, default: Any = None,
                      ensure_ascii: bool = True) -> None:
    """Atomically write `obj` as JSON indented by 2, with a final newline (every JSON file we write)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys, default=default,
                                       ensure_ascii=ensure_ascii) + "\n")


def atomic_symlink(target: str, link: PathLike) -> None:
    """Point the symlink `link` at `target`, replacing an existing `link` in one rename."""
    link = Path(link)
    remove_stale(link)
    tmp = _temp_name(link.absolute(), "tmp")
    tmp.symlink_to(target)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def set_aside(path: PathLike, suffix: str) -> Path:
    """Rename `path` to `path` + `suffix` (replacing one of that name) and return the new path.

    For files kept rather than deleted, such as a checkpoint that cannot be read.
    """
    path = Path(path)
    aside = path.with_name(path.name + suffix)
    os.replace(path, aside)
    return aside
