"""scripts/build-images [TARGET ...]: the base image if missing, then each target's image.

Targets: gateway, session-gimp, session-inkscape, session-blender (default: the first three).
Prints one JSON line per image built: its tag, size in bytes and build time."""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import base, build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/build-images", description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help=f"one of {', '.join(build.TARGETS)} (default: "
                             f"{' '.join(build.DEFAULT_TARGETS)})")
    parser.add_argument("--podman", default="podman", help="the podman binary")
    args = parser.parse_args(argv)
    unknown = [t for t in args.targets if t not in build.TARGETS]
    if unknown:
        parser.error(f"unknown target {unknown[0]!r}: expected one of {', '.join(build.TARGETS)}")
    for tool in (args.podman, "buildah"):
        if not shutil.which(tool):
            print(f"build-images: {tool} is not installed (scripts/setup installs podman, "
                  f"buildah and debootstrap)", file=sys.stderr)
            return 1
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    try:
        base.ensure(log=log, podman=args.podman)
        with tempfile.TemporaryDirectory(prefix="build-images-") as work:
            volumes = build.host_volumes(Path(work))
            for target in args.targets or build.DEFAULT_TARGETS:
                log(f"build-images: {build.tag(target)}")
                started = time.monotonic()
                subprocess.run(build.build_command(target, volumes, podman=args.podman),
                               check=True, stdout=sys.stderr)
                print(build.summary(target, time.monotonic() - started, args.podman), flush=True)
    except subprocess.CalledProcessError as exc:
        print(f"build-images: {' '.join(map(str, exc.cmd[:3]))}… failed with status "
              f"{exc.returncode}", file=sys.stderr)
        return 1
    except (OSError, base.sources.SourcesError) as exc:
        print(f"build-images: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
