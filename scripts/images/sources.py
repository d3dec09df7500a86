"""The machine's apt sources (deb822 `*.sources` and classic `*.list`), read to find the
Debian mirror for debootstrap and the image's own apt sources. Pure parsing, plus one reader."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"  # in every Debian base system
# The suites the image's apt uses: the release, its point updates and security updates.
IMAGE_SUITES = (SUITE, f"{SUITE}-updates", f"{SUITE}-security")


class SourcesError(Exception):
    """The machine's apt sources name no usable Debian mirror; the message says what is missing."""


@dataclass(frozen=True)
class Source:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    types: tuple[str, ...] = ("deb",)


def parse_deb822(text: str) -> list[Source]:
    """Stanzas of a `.sources` file (sources.list(5), DEB822-STYLE FORMAT)."""
    sources = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0].isspace() and key:  # a continuation line
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if not fields.get("uris") or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields["uris"].split():
            sources.append(Source(uri.rstrip("/"), tuple(fields.get("suites", "").split()),
                                  tuple(fields.get("components", "").split()),
                                  tuple(fields.get("types", "deb").split())))
    return sources


def parse_list(text: str) -> list[Source]:
    """Lines of a classic `sources.list`: `deb [options] URI SUITE COMPONENT...`."""
    sources = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        line = re.sub(r"\[[^\]]*\]", " ", line)  # [arch=... signed-by=...]
        words = line.split()
        if len(words) >= 3 and words[0] in ("deb", "deb-src"):
            sources.append(Source(words[1].rstrip("/"), (words[2],), tuple(words[3:]),
                                  (words[0],)))
    return sources


def read_sources(apt_dir: Path = Path("/etc/apt")) -> list[Source]:
    sources = []
    main = apt_dir / "sources.list"
    if main.is_file():
        sources += parse_list(main.read_text())
    parts = apt_dir / "sources.list.d"
    for path in sorted(parts.glob("*.list")) if parts.is_dir() else []:
        sources += parse_list(path.read_text())
    for path in sorted(parts.glob("*.sources")) if parts.is_dir() else []:
        sources += parse_deb822(path.read_text())
    return sources


def _debian(sources: list[Source], suite: str) -> list[Source]:
    return [s for s in sources if "deb" in s.types and suite in s.suites and "main" in s.components]


def mirror(sources: list[Source], suite: str = SUITE) -> str:
    """The URI of the first binary source that carries `suite` main: debootstrap's mirror."""
    found = _debian(sources, suite)
    if not found:
        raise SourcesError(f"no apt source carries '{suite} main' (looked in /etc/apt/sources.list "
                           f"and /etc/apt/sources.list.d/*.list, *.sources)")
    return found[0].uri


def image_sources(sources: list[Source]) -> str:
    """A deb822 `debian.sources` for the image: the machine's mirrors of the release, its
    updates and its security suite (main only), in the machine's order."""
    stanzas: dict[str, list[str]] = {}
    for suite in IMAGE_SUITES:
        for source in _debian(sources, suite):
            suites = stanzas.setdefault(source.uri, [])
            if suite not in suites:
                suites.append(suite)
    if SUITE not in {s for suites in stanzas.values() for s in suites}:
        raise SourcesError(f"no apt source carries '{SUITE} main'")
    return "\n".join(f"Types: deb\nURIs: {uri}\nSuites: {' '.join(suites)}\nComponents: main\n"
                     f"Signed-By: {KEYRING}\n" for uri, suites in stanzas.items())
