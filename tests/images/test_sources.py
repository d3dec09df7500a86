"""The build command's pure parts: reading the machine's apt sources (deb822 and classic) for
debootstrap's mirror and the image's sources, and the pip configuration it passes in."""
from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from scripts.images import build, sources

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Enabled: no
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
"""


def test_deb822_and_classic_sources_give_the_mirror_and_the_images_sources(tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "debian.sources").write_text(DEB822)
    (apt / "sources.list.d" / "other.list").write_text(
        "deb [arch=amd64 signed-by=/k.gpg] https://packages.example/apt stable main\n")
    (apt / "sources.list.d" / "off.sources.disabled-by-farm").write_text(
        "Types: deb\nURIs: http://nope/\nSuites: bookworm\nComponents: main\n")
    found = sources.read_sources(apt)
    assert sources.mirror(found) == "http://deb.debian.org/debian"
    assert sources.image_sources(found) == (
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")


def test_a_classic_sources_list_alone_is_enough(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb http://mirror.example/debian/ bookworm main contrib\n"
        "deb-src http://mirror.example/debian bookworm main\n"
        "deb http://security.example/debian-security bookworm-security main\n")
    found = sources.read_sources(tmp_path)
    assert sources.mirror(found) == "http://mirror.example/debian"
    assert "Suites: bookworm-security" in sources.image_sources(found)


def test_no_debian_source_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb http://x.example/ubuntu jammy main\n")
    with pytest.raises(sources.SourcesError, match="no apt source carries 'bookworm main'"):
        sources.mirror(sources.read_sources(tmp_path))


def test_the_pip_configuration_travels_with_its_local_paths(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("pem")
    wheels = tmp_path / "wheels"
    index = tmp_path / "pypi" / "simple"
    for directory in (wheels, index):
        directory.mkdir(parents=True)
    settings = {"global": {"cert": str(ca), "find-links": str(wheels), "timeout": "60",
                           "extra-index-url": f"https://pypi.example/simple file://{index}",
                           "constraint": "/nonexistent/constraints.txt"}}
    volumes = build.BuildVolumes()
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(build.pip_config(settings, volumes))
    inside = dict(volumes.mounts)
    assert inside[str(ca)] == parser["global"]["cert"] and inside[str(ca)].startswith("/run/build/")
    assert inside[str(wheels)] == parser["global"]["find-links"]
    # an index travels with the directory above it (its links to ../files)
    extra = parser["global"]["extra-index-url"].split()
    assert extra[0] == "https://pypi.example/simple"
    assert extra[1] == f"file://{inside[str(index.parent)]}/simple"
    assert "constraint" not in parser["global"]  # a path this machine lacks: left out
    assert parser["global"]["timeout"] == "60"
    assert all(arg.endswith(":ro") for arg in volumes.args()[1::2])


def test_build_commands_tag_what_deploy_names() -> None:
    argv = build.build_command("session-inkscape", build.BuildVolumes([("/a", "/run/build/a")]))
    assert argv[:8] == ["podman", "build", "--isolation", "chroot", "--network", "host",
                        "--pull=never", "--layers"]
    assert argv[argv.index("-t") + 1] == f"{build.REGISTRY}/session-inkscape:{build.version()}"
    assert "APPLICATION=inkscape" in argv and "/a:/run/build/a:ro" in argv
