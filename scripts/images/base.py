"""The `debian:bookworm-slim` base image, made here instead of pulled: `debootstrap --variant=
minbase bookworm` from the machine's own Debian mirror, trimmed the way the official slim image
is (no docs, man pages or translations, now or in later `apt-get install`s; no apt lists or
caches), then `podman import`ed under the official name so that `FROM debian:bookworm-slim`
resolves to it without a pull.

Cached twice: the rootfs tarball under the cache directory, and the image itself; both carry a
digest of this recipe, so a changed recipe (or someone else's image of that name) is rebuilt."""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from . import sources

IMAGE = f"docker.io/library/debian:{sources.SUITE}-slim"
LABEL = "org.gimp-streaming-platform.base"

# /etc/dpkg/dpkg.cfg.d/slim: what the official slim variant keeps out of every package.
DPKG_EXCLUDES = """\
# The slim variant: documentation, manuals and translations are not installed.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
"""
# /etc/apt/apt.conf.d/slim: no package caches left behind, no translated descriptions.
APT_CONFIG = """\
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
APT::AutoRemove::SuggestsImportant "false";
"""
_RECIPE_VERSION = "1"  # bump when the steps below change in a way the texts above do not show


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(root) / "gimp-streaming-platform" / "images"


def recipe_digest(image_sources: str) -> str:
    text = "\0".join((_RECIPE_VERSION, sources.SUITE, DPKG_EXCLUDES, APT_CONFIG, image_sources))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def image_digest(podman: str = "podman") -> str | None:
    """The recipe digest of the local base image, None if there is none (or not ours)."""
    result = subprocess.run([podman, "image", "inspect", "--format",
                             f'{{{{index .Labels "{LABEL}"}}}}', IMAGE],
                            capture_output=True, text=True)
    value = result.stdout.strip()
    return value if result.returncode == 0 and value and value != "<no value>" else None


def ensure(log=print, podman: str = "podman", apt_dir: Path = Path("/etc/apt")) -> str:
    """Make sure `debian:bookworm-slim` exists locally, built from this recipe; returns its name."""
    found = sources.read_sources(apt_dir)
    mirror = sources.mirror(found)
    image_sources = sources.image_sources(found)
    digest = recipe_digest(image_sources)
    if image_digest(podman) == digest:
        return IMAGE
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one debootstrap at a time on this machine
        if image_digest(podman) == digest:
            return IMAGE
        tarball = cache / f"debian-{sources.SUITE}-slim-{digest}.tar.gz"
        if not tarball.exists():
            log(f"base: debootstrap --variant=minbase {sources.SUITE} from {mirror}")
            _bootstrap(tarball, mirror, image_sources)
        log(f"base: podman import {tarball.name} as {IMAGE}")
        subprocess.run([podman, "import", "--change", 'CMD ["bash"]',
                        "--change", f"LABEL {LABEL}={digest}",
                        "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        str(tarball), IMAGE], check=True, stdout=subprocess.DEVNULL)
    return IMAGE


def _bootstrap(tarball: Path, mirror: str, image_sources: str) -> None:
    if os.geteuid() != 0:
        raise PermissionError("debootstrap needs root: run scripts/build-images as root or with sudo")
    if not shutil.which("debootstrap"):
        raise FileNotFoundError("debootstrap is not installed (Debian package debootstrap; "
                                "scripts/setup installs it)")
    with tempfile.TemporaryDirectory(prefix="base-", dir=tarball.parent) as work:
        root = Path(work) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", "--components=main", sources.SUITE,
                        str(root), mirror], check=True, stdout=subprocess.DEVNULL)
        slim(root, image_sources)
        partial = tarball.with_suffix(".partial")
        with tarfile.open(partial, "w:gz", compresslevel=3) as tar:
            for entry in sorted(os.listdir(root)):
                tar.add(root / entry, arcname=entry)
        partial.rename(tarball)


def slim(root: Path, image_sources: str) -> None:
    """Trim a fresh minbase tree to the official slim shape (the files the dpkg excludes
    above keep out of later installs go now too) and make it the image's apt sources."""
    (root / "etc/dpkg/dpkg.cfg.d/slim").write_text(DPKG_EXCLUDES)
    (root / "etc/apt/apt.conf.d/slim").write_text(APT_CONFIG)
    for path in ("usr/share/groff", "usr/share/info", "usr/share/linda", "usr/share/man",
                 "usr/share/lintian/overrides"):
        _empty(root / path)
    _empty(root / "usr/share/locale", keep={"locale.alias"})
    for doc in (root / "usr/share/doc").iterdir():
        if doc.is_dir() and not doc.is_symlink():
            _empty(doc, keep={"copyright"})
            if not any(doc.iterdir()):
                doc.rmdir()
    _empty(root / "var/lib/apt/lists", keep={"partial", "lock"})
    _empty(root / "var/cache/apt", keep={"archives"})
    _empty(root / "var/cache/apt/archives", keep={"partial", "lock"})
    for old in ("var/cache/debconf/config.dat-old", "var/cache/debconf/templates.dat-old"):
        (root / old).unlink(missing_ok=True)
    for log in (root / "var/log").rglob("*"):  # debootstrap's and dpkg's logs of this machine
        if log.is_file():
            log.unlink()
    _empty(root / "dev")  # the runtime mounts its own
    # The machine's identity stays out: the runtime provides DNS and the host name.
    (root / "etc/resolv.conf").write_text("")
    (root / "etc/hostname").unlink(missing_ok=True)
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(image_sources)


def _empty(directory: Path, keep: set[str] = frozenset()) -> None:
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
