"""Opening a path beneath the home, so that nothing the path or the disk says can lead out.

Every path is opened relative to one descriptor of the home, never as a string: with
`openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` (Linux ≥ 5.6) the kernel follows symlinks
only while they stay beneath the home and fails with EXDEV otherwise, atomically, so a symlink
swapped in mid-request cannot redirect anything. Where openat2 is missing (or filtered by a
seccomp profile) the fallback walks one segment at a time with O_NOFOLLOW and follows no
symlink at all. Both give a descriptor; what is done with it (`home.py`) never goes back to a
path string.
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat

SYS_OPENAT2 = 437  # the same number on every architecture (asm-generic, Linux 5.6)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08
DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


class Escape(OSError):
    """The path leads out of the home, or through a symlink the resolver does not follow."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _openat2(dir_fd: int, path: bytes, flags: int, mode: int = 0) -> int:
    how = _OpenHow(flags, mode, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dir_fd), ctypes.c_char_p(path),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        code = ctypes.get_errno()
        if code == errno.EXDEV:
            raise Escape(code, "the path leads outside the home")
        raise OSError(code, os.strerror(code))
    return fd


def openat2_works(dir_fd: int) -> bool:
    try:
        os.close(_openat2(dir_fd, b".", DIR_FLAGS))
        return True
    except OSError as exc:  # ENOSYS: old kernel; EPERM: a seccomp filter that does not know it
        if exc.errno in (errno.ENOSYS, errno.EPERM):
            return False
        raise


class Resolver:
    """Opens `segments` (names checked by paths.parse) beneath `home_fd`."""

    def __init__(self, home_fd: int, method: str = "auto") -> None:
        if method not in ("auto", "openat2", "walk"):
            raise ValueError(f"unknown resolver {method!r}")
        self.home_fd = home_fd
        self.method = ("openat2" if openat2_works(home_fd) else "walk") if method == "auto" else method

    def open(self, segments: tuple[str, ...], flags: int, *, follow: bool = True) -> int:
        """A descriptor of the path (the home for `()`) with `flags` (O_CLOEXEC is added).
        `follow=False` refuses a symlink as the last segment (ELOOP), as O_NOFOLLOW does."""
        flags |= os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
        if self.method == "openat2":
            path = os.fsencode("/".join(segments)) if segments else b"."
            return _openat2(self.home_fd, path, flags)
        return self._walk(segments, flags)

    def directory(self, segments: tuple[str, ...]) -> int:
        """An O_PATH descriptor of a directory beneath the home."""
        return self.open(segments, DIR_FLAGS)

    def _walk(self, segments: tuple[str, ...], flags: int) -> int:
        if not segments:
            return os.open(".", flags, dir_fd=self.home_fd)
        current = self.home_fd
        try:
            for name in segments[:-1]:
                step = self._step(current, name, DIR_FLAGS | os.O_NOFOLLOW)
                self._release(current)
                current = step
            return self._step(current, segments[-1], flags | os.O_NOFOLLOW)
        finally:
            self._release(current)

    def _step(self, parent: int, name: str, flags: int) -> int:
        try:
            return os.open(name, flags, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP) and _is_link(parent, name):
                raise Escape(errno.ELOOP, "symbolic links are not followed here") from None
            raise

    def _release(self, fd: int) -> None:
        if fd != self.home_fd:
            os.close(fd)


def _is_link(parent: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except OSError:
        return False
