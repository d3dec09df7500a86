"""A GIMP round trip through the gateway: a PNG uploaded into a real GIMP session's home is
opened by GIMP (a batch GIMP on the session's display, with the session's HOME), changed and
exported there, and the export downloaded through the gateway has GIMP's pixels."""
from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import aiohttp
from PIL import Image, ImageChops

from tests.files.conftest import Gateway
from tests.gateway.conftest import descendants, user

# Open, invert, export as PNG: what a user does with File > Open, Colors > Invert, File > Export.
SCRIPT = """(let* ((image (car (gimp-file-load RUN-NONINTERACTIVE "Uploads/photo.png" "photo.png")))
       (layer (car (gimp-image-flatten image))))
  (gimp-drawable-invert layer FALSE)
  (file-png-save-defaults RUN-NONINTERACTIVE image layer "Uploads/photo-inverted.png" "photo-inverted.png")
  (gimp-image-delete image))"""


def session_display(sid: str) -> str:
    """The X display of the session's agent (its --display), found among this test's processes."""
    for pid in descendants(os.getpid()):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if f"SESSION_ID={sid}".encode() in environ and "session_agent" in args and "--display" in args:
            return args[args.index("--display") + 1]
    raise AssertionError(f"no agent process for {sid}")


def gimp_processes(home: Path) -> list[int]:
    found = []
    for pid in descendants(os.getpid()):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if name.startswith("gimp") and f"HOME={home}".encode() in env:
            found.append(pid)
    return found


async def test_a_png_goes_through_gimp_and_back(gateway: Gateway) -> None:
    sid = await gateway.session("gina", "gimp")
    home = gateway.home_of("gina")
    assert gimp_processes(home), "the session runs a real GIMP"
    original = Image.new("RGB", (96, 64))
    original.putdata([((x * 8) % 256, (y * 4) % 256, (x * y) % 256) for y in range(64) for x in range(96)])
    png = io.BytesIO()
    original.save(png, "PNG")
    base = f"/api/sessions/{sid}/files/Uploads/"
    async with aiohttp.ClientSession(gateway.url, headers=user("gina")) as http:
        async with http.put(base + "photo.png", data=png.getvalue()) as r:
            assert r.status == 201, await r.text()

        # GIMP, on the session's display with the session's HOME, opens the upload and exports.
        env = {**os.environ, "HOME": str(home), "DISPLAY": session_display(sid),
               "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache")}
        gimp = await asyncio.create_subprocess_exec(
            "gimp", "-i", "-n", "-d", "-f", "--batch-interpreter", "plug-in-script-fu-eval",
            "-b", SCRIPT, "-b", "(gimp-quit 0)", cwd=home, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await asyncio.wait_for(gimp.communicate(), 180)
        assert gimp.returncode == 0, output.decode(errors="replace")[-2000:]

        async with http.get(base + "photo-inverted.png?download=1") as r:
            assert r.status == 200 and r.headers["Content-Type"] == "image/png"
            exported = Image.open(io.BytesIO(await r.read())).convert("RGB")
    assert exported.size == original.size
    assert ImageChops.difference(exported, ImageChops.invert(original)).getbbox() is None
    assert (home / "Uploads/photo.png").read_bytes() == png.getvalue()  # the upload is untouched
