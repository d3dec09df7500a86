"""The images this repository builds, their tags (the ones deploy/ and the controller's default
settings name), and the `podman build` that makes each.

The build machine's pip configuration and CA bundle may be needed to reach a package index
(a proxy, a local mirror): they are passed as build-time volumes under /run/build, never
copied into a layer. The Dockerfiles use them only when they are there."""
from __future__ import annotations

import configparser
import json
import os
import subprocess
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = "ghcr.io/gimp-streaming-platform"
APPLICATIONS = ("gimp", "inkscape", "blender")
BUILD_DIR = "/run/build"  # where the build-time volumes appear inside a build
CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
# pip settings whose values are local paths (or file: URLs) that must travel with the config
_PATH_KEYS = {"cert", "client-cert", "constraint", "requirement", "find-links", "index-url",
              "extra-index-url"}


@dataclass(frozen=True)
class Target:
    name: str
    dockerfile: str
    build_args: Mapping[str, str] = field(default_factory=dict)


TARGETS = {"gateway": Target("gateway", "Dockerfile.gateway"),
           **{f"session-{app}": Target(f"session-{app}", "Dockerfile.session",
                                       {"APPLICATION": app}) for app in APPLICATIONS}}
DEFAULT_TARGETS = ("gateway", "session-gimp", "session-inkscape")  # blender: on request


def version(root: Path = ROOT) -> str:
    with open(root / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


def tag(target: str, root: Path = ROOT) -> str:
    return f"{REGISTRY}/{TARGETS[target].name}:{version(root)}"


def all_tags(root: Path = ROOT) -> set[str]:
    """Every tag a build can produce (what deploy/ and the controller may reference)."""
    return {tag(name, root) for name in TARGETS}


@dataclass
class BuildVolumes:
    """`-v SRC:DST:ro` pairs for podman build, plus the files written for them."""

    mounts: list[tuple[str, str]] = field(default_factory=list)

    def args(self) -> list[str]:
        return [arg for src, dst in self.mounts for arg in ("-v", f"{src}:{dst}:ro")]

    def add(self, src: str, name: str) -> str:
        dst = f"{BUILD_DIR}/{name}"
        self.mounts.append((src, dst))
        return dst


def pip_settings(python: str = "python3") -> dict[str, dict[str, str]]:
    """The machine's effective pip settings, environment included (`pip config list`):
    section -> key -> value, env values winning over files as they do for pip itself."""
    try:
        out = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "PIP_NO_INPUT": "1"})
    except (OSError, subprocess.TimeoutExpired):
        return {}
    files: dict[str, dict[str, str]] = {}
    env: dict[str, str] = {}
    for line in out.stdout.splitlines():
        name, sep, raw = line.partition("=")
        if not sep:
            continue
        value = raw.strip().strip("'\"")
        section, _, key = name.rpartition(".")
        if section == ":env:":
            env[key] = value
        elif section:
            files.setdefault(section, {})[key] = value
    if env:
        files.setdefault("global", {}).update(env)
    return files


def _local_path(value: str) -> str | None:
    if value.startswith("file:"):
        value = unquote(urlparse(value).path)
    return value if value.startswith("/") and os.path.exists(value) else None


def pip_config(settings: Mapping[str, Mapping[str, str]], volumes: BuildVolumes) -> str:
    """A pip.conf for inside the build: the machine's settings, with every local path
    (CA bundle, constraints, wheel directories, file: indexes) mounted under /run/build/pip
    and rewritten to where it appears there; settings naming a missing path are left out."""
    parser = configparser.ConfigParser(interpolation=None)
    count = 0
    for section, values in settings.items():
        for key, value in values.items():
            if key in _PATH_KEYS:
                rewritten = []
                for item in value.split():
                    path = _local_path(item)
                    if path is None and (item.startswith("/") or item.startswith("file:")):
                        continue  # a path this machine does not have: useless inside too
                    if path is not None:
                        count += 1
                        if key.endswith("index-url") and os.path.isdir(path):
                            # a PEP 503 index links to its files relatively (../../files/…):
                            # the directory above it travels too
                            parent = Path(path).parent
                            inside = volumes.add(str(parent), f"pip/{count}-{parent.name}")
                            inside = f"{inside}/{Path(path).name}"
                        else:
                            inside = volumes.add(path, f"pip/{count}-{Path(path).name}")
                        item = f"file://{inside}" if item.startswith("file:") else inside
                    rewritten.append(item)
                if not rewritten:
                    continue
                value = " ".join(rewritten)
            if not parser.has_section(section):
                parser.add_section(section)
            parser.set(section, key, value)
    lines = []
    for section in parser.sections():
        lines.append(f"[{section}]")
        lines += [f"{k} = {v}" for k, v in parser.items(section)]
    return "\n".join(lines) + "\n" if lines else ""


def host_volumes(workdir: Path, python: str = "python3",
                 ca_bundles: Iterable[str] = CA_BUNDLES) -> BuildVolumes:
    """What the build may need from this machine: its CA bundle (at a path of its own, since
    ca-certificates cannot replace a bind-mounted /etc/ssl/certs/ca-certificates.crt) and
    its pip configuration. Only what exists is passed."""
    volumes = BuildVolumes()
    bundle = next((b for b in (os.environ.get("SSL_CERT_FILE"), *ca_bundles)
                   if b and os.path.isfile(b)), None)
    if bundle:
        volumes.add(bundle, "ca-certificates.crt")
    config = pip_config(pip_settings(python), volumes)
    if config:
        path = workdir / "pip.conf"
        path.write_text(config)
        volumes.add(str(path), "pip.conf")
    return volumes


def build_command(target: str, volumes: BuildVolumes, *, podman: str = "podman",
                  root: Path = ROOT) -> list[str]:
    spec = TARGETS[target]
    argv = [podman, "build", "--isolation", "chroot", "--network", "host", "--pull=never",
            "--layers", "-f", str(root / spec.dockerfile), "-t", tag(target, root)]
    for key, value in spec.build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    return [*argv, *volumes.args(), str(root)]


def image_size(image: str, podman: str = "podman") -> int:
    out = subprocess.run([podman, "image", "inspect", "--format", "{{.Size}}", image],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip())


def summary(target: str, seconds: float, podman: str = "podman") -> str:
    image = tag(target)
    return json.dumps({"image": image, "target": target, "size_bytes": image_size(image, podman),
                       "build_s": round(seconds, 1)})
