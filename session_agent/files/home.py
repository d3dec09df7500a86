"""Every file operation of `/files/…`, on descriptors opened beneath the home (blocking: the
routes run these off the event loop).

Rules beyond the path checks (`paths.py`) and the resolver (`resolve.py`):
- A regular file with more than one hard link is neither served nor replaced (403). A hard
  link can name a file outside the home (the application runs as the agent's uid, and
  `fs.protected_hardlinks` only stops links to other users' files), and no descriptor can tell
  which of its names is "the" file, so the only safe answer is to refuse it.
- A symlink is listed as `link`. Reading goes through it only while it stays beneath the home
  (openat2); an upload never replaces or writes through one (403), a DELETE removes the link,
  never what it points to.
- Uploads go to an O_TMPFILE in the target's folder (no name at all until complete), written
  back while it arrives and fsynced when complete, then linked into place through
  /proc/self/fd and renamed over the target: a cut, a full disk, a refused condition or a
  crash leaves nothing (or the old file). Without O_TMPFILE the temporary file is a hidden `.gsp-upload-…`
  name, never listed and swept when stale. Folders an upload created are removed again if it fails.
- Other kinds of files (sockets, FIFOs, devices) are not listed and not served.
"""
from __future__ import annotations

import ctypes
import errno
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from .headers import etag, precondition_failed, rfc3339
from .paths import UPLOAD_PREFIX, FilePath
from .resolve import Escape, Resolver

STALE_UPLOAD_S = 3600  # a hidden temporary file untouched this long belongs to no live upload
_FULL = (errno.ENOSPC, errno.EDQUOT)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing these bytes to the disk now (it does not wait): the
    fsync at the end then has little left to do, and an upload does not pile up dirty pages."""
    _libc.sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)  # best effort: errors ignored


class FileError(Exception):
    """A refusal with its HTTP status; the message is the `error` of the JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _refusal(exc: OSError, path: FilePath) -> FileError:
    """The client's error for what the kernel said; anything unexpected stays an OSError (500)."""
    where = path.text or "the home"
    if isinstance(exc, Escape):
        return FileError(403, f"{where}: {exc.strerror}")
    status, text = {
        errno.ENOENT: (404, "no such file or folder"),
        errno.ENOTDIR: (404, "no such folder (a part of the path is a file)"),
        errno.ELOOP: (403, "is a symbolic link"),
        errno.EACCES: (403, "permission denied"),
        errno.EPERM: (403, "permission denied"),
        errno.EROFS: (403, "the home is read-only"),
        errno.ENAMETOOLONG: (400, "the name is too long for this file system"),
        errno.EISDIR: (409, "is a folder"),
        errno.ENOTEMPTY: (409, "the folder is not empty"),
        errno.EEXIST: (409, "already exists"),
        errno.ENOSPC: (507, "the disk is full"),
        errno.EDQUOT: (507, "the disk quota is exhausted"),
    }.get(exc.errno or 0, (0, ""))
    if not status:
        raise exc
    return FileError(status, f"{where}: {text}")


def _kind(mode: int) -> str | None:
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return None


def _close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


class Home:
    """One user's home, opened once; every path is resolved beneath this descriptor."""

    def __init__(self, path: str, resolver: str = "auto") -> None:
        self.path = path
        self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.resolver = Resolver(self.fd, resolver)
        # Linking an O_TMPFILE without CAP_DAC_READ_SEARCH needs its /proc/self/fd name.
        self.tmpfile = os.path.isdir("/proc/self/fd")

    def close(self) -> None:
        _close(self.fd)

    # -- reading ----------------------------------------------------------------------

    def open_get(self, path: FilePath) -> tuple[str, Any]:
        """("dir", listing) or ("file", (fd, stat)) for a GET; the caller closes the fd."""
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | (os.O_DIRECTORY if path.directory else 0)
        try:
            fd = self.resolver.open(path.segments, flags)
        except OSError as exc:
            raise _refusal(exc, path) from None
        keep = False
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                return "dir", self._listing(fd, path)
            if not stat.S_ISREG(st.st_mode):
                raise FileError(403, f"{path.text}: not a regular file")
            if st.st_nlink > 1:
                raise FileError(403, f"{path.text}: the file has other hard links (it may be a "
                                     "file outside the home), so it is not served")
            keep = True
            return "file", (fd, st)
        finally:
            if not keep:
                os.close(fd)

    def _listing(self, fd: int, path: FilePath) -> dict[str, Any]:
        entries = []
        with os.scandir(fd) as it:  # scandir duplicates the descriptor
            for entry in it:
                if entry.name.startswith(UPLOAD_PREFIX):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:  # gone meanwhile
                    continue
                kind = _kind(st.st_mode)
                if kind is None:
                    continue
                entries.append({"name": entry.name, "type": kind,
                                "size": st.st_size if kind == "file" else 0,
                                "modified": rfc3339(st.st_mtime)})
        entries.sort(key=lambda e: e["name"])
        return {"path": path.text, "entries": entries}

    # -- folders ----------------------------------------------------------------------

    def _folder(self, segments: tuple[str, ...], path: FilePath,
                created: list[tuple[tuple[str, ...], str]] | None = None) -> int:
        """An O_PATH descriptor of the folder `segments`; with `created`, missing folders are
        made (and recorded there, so that a failed upload can remove them again)."""
        try:
            return self.resolver.directory(segments)
        except FileNotFoundError:
            if created is None:
                raise _refusal(FileNotFoundError(errno.ENOENT, ""), path) from None
        except OSError as exc:
            raise _refusal(exc, path) from None
        if not segments:
            raise FileError(404, "the home is gone")
        parent = self._folder(segments[:-1], path, created)
        try:
            os.mkdir(segments[-1], 0o777, dir_fd=parent)
            created.append((segments[:-1], segments[-1]))
        except FileExistsError:
            pass  # made meanwhile by somebody else: open what is there, as for any folder
        except OSError as exc:
            raise _refusal(exc, path) from None
        finally:
            os.close(parent)
        try:  # resolved again from the home: whatever is there now must be a folder beneath it
            return self.resolver.directory(segments)
        except OSError as exc:
            if exc.errno == errno.ENOTDIR and not isinstance(exc, Escape):
                raise FileError(409, f"{'/'.join(segments)} is a file, not a folder") from None
            raise _refusal(exc, path) from None

    def _remove_created(self, created: list[tuple[tuple[str, ...], str]]) -> None:
        for parent, name in reversed(created):
            try:
                fd = self.resolver.directory(parent)
            except OSError:
                continue
            try:
                os.rmdir(name, dir_fd=fd)
            except OSError:
                pass  # somebody else put something there meanwhile: theirs now
            finally:
                os.close(fd)
        created.clear()

    def make_dir(self, path: FilePath) -> bool:
        """`PUT path/` with no body: True when made, False when the folder already existed."""
        if path.is_home:
            return False
        try:
            fd = self.resolver.directory(path.segments)
            os.close(fd)
            return False
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno == errno.ENOTDIR and not isinstance(exc, Escape):
                raise FileError(409, f"{path.text}: a file of that name exists") from None
            raise _refusal(exc, path) from None
        created: list[tuple[tuple[str, ...], str]] = []
        os.close(self._folder(path.segments, path, created))
        return bool(created)

    # -- writing ----------------------------------------------------------------------

    def _target(self, folder: int, path: FilePath) -> os.stat_result | None:
        """What the upload would replace (None: nothing); refuses what it must not replace."""
        try:
            st = os.stat(path.name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _refusal(exc, path) from None
        if stat.S_ISLNK(st.st_mode):
            raise FileError(403, f"{path.text} is a symbolic link: an upload neither replaces "
                                 "links nor writes through them")
        if stat.S_ISDIR(st.st_mode):
            raise FileError(409, f"{path.text} is a folder")
        if not stat.S_ISREG(st.st_mode):
            raise FileError(403, f"{path.text}: not a regular file")
        if st.st_nlink > 1:
            raise FileError(403, f"{path.text}: the file has other hard links (it may be a file "
                                 "outside the home), so it is not replaced")
        return st

    def begin_upload(self, path: FilePath, if_match: str | None = None,
                     if_none_match: str | None = None) -> "Upload":
        """Checks the target and the conditions (before any of the body is read), makes the
        missing folders and the temporary file."""
        try:
            folder: int | None = self.resolver.directory(path.parent)
        except FileNotFoundError:
            folder = None  # nothing is there yet: the conditions are judged on "absent"
        except OSError as exc:
            if exc.errno == errno.ENOTDIR and not isinstance(exc, Escape):
                raise FileError(409, f"{path.text}: a part of the path is a file, not a folder") from None
            raise _refusal(exc, path) from None
        created: list[tuple[tuple[str, ...], str]] = []
        try:
            current = self._target(folder, path) if folder is not None else None
            if precondition_failed(if_match, if_none_match, etag(current) if current else None):
                raise FileError(412, f"{path.text}: the condition (If-Match/If-None-Match) is not met")
            if folder is None:
                folder = self._folder(path.parent, path, created)
            fd, temp = self._temporary(folder, path)
        except BaseException:
            _close(folder)
            self._remove_created(created)
            raise
        return Upload(self, path, folder, fd, temp, created,
                      stat.S_IMODE(current.st_mode) if current else None)

    def _temporary(self, folder: int, path: FilePath) -> tuple[int, str | None]:
        if self.tmpfile:
            try:
                return os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666, dir_fd=folder), None
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise _refusal(exc, path) from None
        self._sweep(folder)
        name = f"{UPLOAD_PREFIX}{secrets.token_hex(8)}"
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                           0o666, dir_fd=folder), name
        except OSError as exc:
            raise _refusal(exc, path) from None

    def _sweep(self, folder: int) -> None:
        """Temporary files of uploads that died with their process (a crash, SIGKILL)."""
        try:
            fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=folder)
        except OSError:
            return
        cutoff = time.time() - STALE_UPLOAD_S
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    if entry.name.startswith(UPLOAD_PREFIX):
                        try:
                            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                                os.unlink(entry.name, dir_fd=folder)
                        except OSError:
                            pass
        finally:
            os.close(fd)

    # -- deleting ---------------------------------------------------------------------

    def delete(self, path: FilePath) -> None:
        if path.is_home:
            raise FileError(403, "the home itself cannot be deleted")
        folder = self._folder(path.parent, path)
        try:
            st = os.stat(path.name, dir_fd=folder, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(path.name, dir_fd=folder)
            else:  # a file, or a link itself (never what it points to)
                os.unlink(path.name, dir_fd=folder)
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:  # swapped for a file meanwhile
                exc = OSError(errno.EISDIR, "")
            raise _refusal(exc, path) from None
        finally:
            os.close(folder)


def _sync_folder(folder: int) -> None:
    """The new name on the disk too (an O_PATH descriptor cannot be fsynced)."""
    try:
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=folder)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # the file is in place; the folder's entry follows with the next writeback
    finally:
        os.close(fd)


@dataclass
class Upload:
    """One PUT in progress: `write` the body, then `commit`, or `abort` (always safe to call)."""

    home: Home
    path: FilePath
    folder: int
    fd: int
    temp: str | None  # the hidden name, or None for an O_TMPFILE
    created: list[tuple[tuple[str, ...], str]]
    mode: int | None  # the replaced file's permissions, kept
    size: int = 0
    done: bool = field(default=False)

    def write(self, pieces: list[bytes]) -> None:
        """Appends the pieces in order (one writev, the rest piecewise if it falls short)."""
        try:
            done = os.writev(self.fd, pieces) if pieces else 0
            total = sum(len(p) for p in pieces)
            if done < total:
                rest = memoryview(b"".join(pieces))[done:]
                while rest:
                    rest = rest[os.write(self.fd, rest):]
        except OSError as exc:
            if exc.errno in _FULL:
                raise FileError(507, "the disk is full: the upload was discarded") from None
            raise _refusal(exc, self.path) from None
        _start_writeback(self.fd, self.size, total)
        self.size += total

    def commit(self, if_match: str | None = None, if_none_match: str | None = None) -> tuple[bool, os.stat_result]:
        """Puts the file in place: (created, its stat). Conditions are checked again here, as
        the target may have changed while the body arrived."""
        path, folder = self.path, self.folder
        try:
            self._same_folder()
            current = self.home._target(folder, path)
            if precondition_failed(if_match, if_none_match, etag(current) if current else None):
                raise FileError(412, f"{path.text}: the condition (If-Match/If-None-Match) is not met")
            if self.mode is not None:
                os.fchmod(self.fd, self.mode)
            # On the disk before it gets its name: after a crash the name holds the old file or
            # the whole new one. (A full disk may also only show here, with delayed allocation.)
            os.fsync(self.fd)
            exclusive = current is None and if_none_match is not None
            if self.temp is None:
                source, source_dir = f"/proc/self/fd/{self.fd}", None
                if current is None and self._link(source, source_dir, path.name, exclusive):
                    return self._finish(True)
                self.temp = f"{UPLOAD_PREFIX}{secrets.token_hex(8)}"
                os.link(source, self.temp, dst_dir_fd=folder, follow_symlinks=True)
            elif exclusive:
                # Only if still absent: a link fails on an existing name, a rename would replace it.
                self._link(self.temp, folder, path.name, True)
                os.unlink(self.temp, dir_fd=folder)
                self.temp = None
                return self._finish(True)
            os.rename(self.temp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
            self.temp = None
            return self._finish(current is None)
        except OSError as exc:
            self.abort()
            if exc.errno in _FULL:
                raise FileError(507, "the disk is full: the upload was discarded") from None
            raise _refusal(exc, path) from None
        except BaseException:
            self.abort()
            raise

    def _link(self, source: str, source_dir: int | None, name: str, exclusive: bool) -> bool:
        """Links the finished file as `name`; False if the name exists and may be replaced."""
        try:
            os.link(source, name, src_dir_fd=source_dir, dst_dir_fd=self.folder,
                    follow_symlinks=source_dir is None)
            return True
        except FileExistsError:
            if exclusive:
                raise FileError(412, f"{self.path.text}: created by somebody else meanwhile "
                                     "(If-None-Match)") from None
            return False

    def _same_folder(self) -> None:
        """The folder must still be where it was: one moved out of the home mid-upload (by the
        application, say) must not receive the file."""
        try:
            now = self.home.resolver.directory(self.path.parent)
        except OSError:
            now = None
        try:
            here = os.fstat(self.folder)
            there = os.fstat(now) if now is not None else None
        finally:
            _close(now)
        if there is None or (there.st_dev, there.st_ino) != (here.st_dev, here.st_ino):
            raise FileError(409, f"{self.path.text}: the folder was moved or replaced during the upload")

    def _finish(self, created: bool) -> tuple[bool, os.stat_result]:
        st = os.fstat(self.fd)
        _sync_folder(self.folder)
        self.done = True
        self.created.clear()  # they hold the file now
        self._release()
        return created, st

    def _release(self) -> None:
        _close(self.fd)
        _close(self.folder)
        self.fd = self.folder = -1

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        if self.temp is not None:
            try:
                os.unlink(self.temp, dir_fd=self.folder)
            except OSError:
                pass
        self._release()  # an O_TMPFILE vanishes with its descriptor
        self.home._remove_created(self.created)
