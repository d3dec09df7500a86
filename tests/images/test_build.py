"""The build command's products: sizes within their targets, the tags deploy/ and the
controller name, a build context without the virtualenv, and the local slim base image."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from gateway.kube.objects import APPLICATIONS, PodSettings
from scripts.images import base, build

pytestmark = pytest.mark.timeout(2700)  # the first test builds the images (a cold cache: minutes)
ROOT = Path(__file__).resolve().parents[2]
MB = 1_000_000
SIZE_TARGETS_MB = {"gateway": 250, "session-gimp": 1000, "session-inkscape": 1000}


def test_sizes_are_within_their_targets(built_images: dict, capsys: pytest.CaptureFixture) -> None:
    sizes = {t: built_images[t]["size_bytes"] / MB for t in SIZE_TARGETS_MB}
    with capsys.disabled():
        print("\nimage sizes (podman image inspect --format {{.Size}}): " + ", ".join(
            f"{t} {mb:.0f} MB (target {SIZE_TARGETS_MB[t]})" for t, mb in sizes.items())
            + f"; build command {built_images['_wall_s']['build_s']} s")
    for target, mb in sizes.items():
        assert mb <= SIZE_TARGETS_MB[target], f"{target}: {mb:.0f} MB"


def referenced_images() -> set[str]:
    """Every image of ours that deploy/ or the controller's defaults name."""
    names = set()
    for path in (ROOT / "deploy").rglob("*.yaml"):
        if path.name == "kustomization.yaml":
            continue  # its `images:` names an image to retag, read below
        names |= set(re.findall(rf"{re.escape(build.REGISTRY)}/[^\s\"']+", path.read_text()))
    for tag in (yaml.safe_load((ROOT / "deploy" / "kustomization.yaml").read_text())
                .get("images") or []):
        if tag["name"].startswith(build.REGISTRY):
            names.add(f"{tag['name']}:{tag['newTag']}")
    expanded = set()
    for name in names | {PodSettings().image}:
        expanded |= {name.replace("{application}", app) for app in APPLICATIONS}
    return expanded


def test_deploy_and_the_controller_name_only_tags_the_build_makes() -> None:
    referenced = referenced_images()
    assert f"{build.REGISTRY}/gateway:{build.version()}" in referenced
    assert f"{build.REGISTRY}/session-gimp:{build.version()}" in referenced
    assert referenced <= build.all_tags(), referenced - build.all_tags()


def test_the_built_images_carry_those_tags(built_images: dict) -> None:
    for target in ("gateway", "session-gimp", "session-inkscape"):
        assert built_images[target]["image"] == build.tag(target)
        assert subprocess.run(["podman", "image", "exists", build.tag(target)]).returncode == 0


def test_the_build_context_leaves_out_the_virtualenv_and_the_rest(built_images: dict,
                                                                   tmp_path: Path) -> None:
    """What podman really sends with this repository's .dockerignore: a build that lists it."""
    (ROOT / ".venv").exists() or pytest.fail("scripts/setup makes .venv: the check needs it there")
    probe = tmp_path / "Dockerfile"
    probe.write_text("FROM debian:bookworm-slim\nCOPY . /context\n"
                     "RUN cd /context && find . -maxdepth 2 | sort && du -sk . && rm -rf /context\n")
    iid = tmp_path / "iid"
    result = subprocess.run(["podman", "build", "--pull=never", "--isolation", "chroot",
                             "--network", "host", "--layers=false", "--iidfile", str(iid),
                             "-f", str(probe), str(ROOT)], capture_output=True, text=True,
                            timeout=600)
    if iid.exists():
        subprocess.run(["podman", "rmi", "-f", iid.read_text().strip()], capture_output=True)
    assert result.returncode == 0, result.stderr[-3000:]
    listed = {line[2:] for line in result.stdout.splitlines() if line.startswith("./")}
    top = {p.split("/")[0] for p in listed}
    assert top == {"pyproject.toml", "README.md", "gateway", "session_agent", "streamwire",
                   "deploy"}, top
    assert "deploy/session-entrypoint.sh" in listed and len([p for p in listed if
                                                             p.startswith("deploy/")]) == 1
    kib = int(next(line for line in result.stdout.splitlines() if line.endswith("\t.")).split()[0])
    assert kib < 5_000, f"the build context is {kib} KiB"


def test_the_base_is_the_local_slim_image(built_images: dict) -> None:
    inspect = json.loads(subprocess.run(["podman", "image", "inspect", base.IMAGE],
                                        capture_output=True, text=True, check=True).stdout)[0]
    assert base.LABEL in inspect["Config"]["Labels"]  # ours, not a pulled one
    ctr = subprocess.run(["buildah", "from", "--pull=never", base.IMAGE], capture_output=True,
                         text=True, check=True).stdout.strip()
    try:
        root = Path(subprocess.run(["buildah", "mount", ctr], capture_output=True, text=True,
                                   check=True).stdout.strip())
        assert (root / "etc/dpkg/dpkg.cfg.d/slim").read_text() == base.DPKG_EXCLUDES
        assert not list((root / "var/lib/apt/lists").glob("*_Packages*"))
        assert not list((root / "usr/share/man").iterdir())
        docs = [p for p in (root / "usr/share/doc").rglob("*") if p.is_file()]
        assert docs and all(p.name == "copyright" for p in docs)
        assert {p.name for p in (root / "usr/share/locale").iterdir()} <= {"locale.alias"}
        sources = (root / "etc/apt/sources.list.d/debian.sources").read_text()
        assert "Suites: bookworm" in sources and not (root / "etc/apt/sources.list").exists()
        assert not (root / "etc/hostname").exists() and (root / "etc/resolv.conf").read_text() == ""
        assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink()) \
            < 100 * MB
    finally:
        subprocess.run(["buildah", "umount", ctr], capture_output=True)
        subprocess.run(["buildah", "rm", ctr], capture_output=True)
