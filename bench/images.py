"""Benchmark: the images' sizes, and the time the build command takes (scripts/build-images;
root, podman, buildah, debootstrap).

    python -m bench.images [--cold]

`--cold` first removes the images, the local base image and its cached rootfs tarball, as on
a fresh CI machine (podman's layer cache goes with them). Prints one figure row per image
(size, target: gateway <= 250 MB, session images <= 1,000 MB) and one for the build time."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.figures import figure  # noqa: E402
from scripts.images import base, build  # noqa: E402

TARGETS_MB = {"gateway": 250, "session-gimp": 1000, "session-inkscape": 1000}


def forget_everything() -> None:
    for image in [build.tag(t) for t in TARGETS_MB] + [base.IMAGE]:
        subprocess.run(["podman", "rmi", "-f", image], capture_output=True)
    subprocess.run(["podman", "image", "prune", "-f"], capture_output=True)
    shutil.rmtree(base.cache_dir(), ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="build from nothing, as CI does")
    args = parser.parse_args()
    if args.cold:
        forget_everything()
    started = time.monotonic()
    result = subprocess.run([str(ROOT / "scripts" / "build-images"), *TARGETS_MB],
                            capture_output=True, text=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        print(result.stderr[-3000:], file=sys.stderr)
        return 1
    for line in result.stdout.splitlines():
        summary = json.loads(line)
        print(json.dumps(figure(f"images.{summary['target']}_mb", summary["size_bytes"] / 1e6,
                                "MB", TARGETS_MB[summary["target"]], image=summary["image"],
                                build_s=summary["build_s"])))
    print(json.dumps(figure("images.build_s", seconds, "s", None, cold=args.cold)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
