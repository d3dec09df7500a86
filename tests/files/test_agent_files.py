"""`/files/…` on a real session agent (its own Xvfb), seen from the HTTP client's side: the
SPEC's semantics, the limits, cut uploads, a full disk, and confinement to the home."""
from __future__ import annotations

import asyncio
import ctypes
import http.client
import json
import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.files.conftest import AUTH, FilesAgent, raw_request, run_agent, tree

SECRET = b"outside-the-home-secret"
ASCII = "".join(map(chr, range(0x21, 0x7F)))


class Http:
    """http.client sends the path exactly as written: no normalization of `..` or `%2e`."""

    def __init__(self, agent: FilesAgent) -> None:
        self.port = agent.agent.port

    def __call__(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None, auth: bool = True) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:  # non-ASCII characters as UTF-8 escapes (an HTTP request line is ASCII)
            conn.request(method, "/files/" + quote(path, safe=ASCII), body=body,
                         headers={**(AUTH if auth else {}), **(headers or {})})
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def call(files_agent: FilesAgent) -> Http:
    return Http(files_agent)


@pytest.fixture
def home(files_agent: FilesAgent) -> Iterator[Path]:
    """The agent's home, emptied after each test."""
    yield files_agent.home
    for entry in files_agent.home.iterdir():
        subprocess.run(["rm", "-rf", str(entry)], check=True)


def test_a_listing_has_the_spec_shape(call: Http, home: Path) -> None:
    (home / "Pictures").mkdir()
    (home / "photo.png").write_bytes(b"\x89PNG" + b"0" * 96)
    (home / ".config").mkdir()
    (home / ".hidden").write_text("x")
    os.symlink("photo.png", home / "alias.png")
    os.mkfifo(home / "fifo")  # neither a file nor a folder: not listed, not served
    status, headers, body = call("GET", "")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    listing = json.loads(body)
    assert listing["path"] == ""
    entries = {e["name"]: e for e in listing["entries"]}
    assert set(entries) == {"Pictures", "photo.png", ".config", ".hidden", "alias.png"}
    assert entries["photo.png"]["type"] == "file" and entries["photo.png"]["size"] == 100
    assert entries["Pictures"] == {**entries["Pictures"], "type": "dir", "size": 0}
    assert entries["alias.png"]["type"] == "link"
    assert all(set(e) == {"name", "type", "size", "modified"} for e in entries.values())
    assert all(e["modified"].endswith("Z") and "T" in e["modified"] for e in entries.values())
    # With or without the trailing slash; a file's path with one is not a folder.
    assert json.loads(call("GET", "Pictures")[2]) == json.loads(call("GET", "Pictures/")[2]) == {
        "path": "Pictures", "entries": []}
    assert call("GET", "photo.png/")[0] == 404
    assert call("GET", "fifo")[0] == 403
    assert call("GET", "nothing-here")[0] == 404


def test_a_file_comes_with_its_headers_and_ranges(call: Http, home: Path) -> None:
    data = bytes(range(256)) * 40
    name = "Été photo #1.png"
    (home / name).write_bytes(data)
    path = quote(name)
    status, headers, body = call("GET", path)
    assert status == 200 and body == data
    assert headers["Content-Type"] == "image/png"
    assert headers["Content-Length"] == str(len(data))
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["ETag"].startswith('"') and headers["Last-Modified"].endswith("GMT")
    assert "Content-Disposition" not in headers
    status, headers, _ = call("GET", path + "?download=1")
    assert headers["Content-Disposition"] == (
        "attachment; filename=\"_t_ photo #1.png\"; filename*=UTF-8''%C3%89t%C3%A9%20photo%20%231.png")
    assert call("HEAD", path)[:2][0] == 200 and call("HEAD", path)[2] == b""
    for header, expected in (("bytes=2-5", (2, 5)), ("bytes=-3", (len(data) - 3, len(data) - 1)),
                             ("bytes=10000-", (10000, len(data) - 1)), ("bytes=10-99999", (10, len(data) - 1))):
        status, headers, body = call("GET", path, headers={"Range": header})
        assert status == 206, header
        assert headers["Content-Range"] == f"bytes {expected[0]}-{expected[1]}/{len(data)}"
        assert body == data[expected[0]:expected[1] + 1]
    status, headers, body = call("GET", path, headers={"Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"
    assert "error" in json.loads(body)
    # Several ranges, another unit, a stale If-Range: the whole file.
    for extra in ({"Range": "bytes=0-1,5-6"}, {"Range": "lines=1-2"},
                  {"Range": "bytes=0-1", "If-Range": '"stale"'}):
        assert call("GET", path, headers=extra)[:1] == (200,)


def test_put_creates_replaces_and_keeps_conditions(call: Http, home: Path) -> None:
    status, headers, body = call("PUT", "Uploads/deep/new.txt", b"first")
    assert status == 201, body
    assert (home / "Uploads/deep/new.txt").read_bytes() == b"first"
    reply = json.loads(body)
    assert reply["size"] == 5 and reply["path"] == "Uploads/deep/new.txt"
    first_tag = headers["ETag"]
    assert call("GET", "Uploads/deep/new.txt")[1]["ETag"] == first_tag
    os.chmod(home / "Uploads/deep/new.txt", 0o600)
    status, headers, _ = call("PUT", "Uploads/deep/new.txt", b"second")
    assert status == 200 and (home / "Uploads/deep/new.txt").read_bytes() == b"second"
    assert (home / "Uploads/deep/new.txt").stat().st_mode & 0o777 == 0o600  # permissions kept
    second_tag = headers["ETag"]
    # Conditions that fail change nothing.
    assert call("PUT", "Uploads/deep/new.txt", b"third", {"If-None-Match": "*"})[0] == 412
    assert call("PUT", "Uploads/deep/new.txt", b"third", {"If-Match": first_tag})[0] == 412
    assert call("PUT", "Uploads/other.txt", b"third", {"If-Match": "*"})[0] == 412
    assert not (home / "Uploads/other.txt").exists()
    assert (home / "Uploads/deep/new.txt").read_bytes() == b"second"
    assert call("PUT", "Uploads/deep/new.txt", b"third", {"If-Match": second_tag})[0] == 200
    assert call("PUT", "Uploads/fresh.txt", b"x", {"If-None-Match": "*"})[0] == 201
    # Chunked bodies are fine too.
    conn = http.client.HTTPConnection("127.0.0.1", call.port, timeout=30)
    conn.request("PUT", "/files/chunked.bin", body=iter([b"a" * 70000, b"b" * 3]), headers=AUTH,
                 encode_chunked=True)
    assert conn.getresponse().status == 201
    conn.close()
    assert (home / "chunked.bin").read_bytes() == b"a" * 70000 + b"bbb"
    # Folders: made (201), already there (200), never with a body; files and folders don't mix.
    assert call("PUT", "New%20folder/")[0] == 201 and (home / "New folder").is_dir()
    assert call("PUT", "New%20folder/")[0] == 200
    assert call("PUT", "")[0] == 200
    assert call("PUT", "Other/", b"body")[0] == 400 and not (home / "Other").exists()
    assert call("PUT", "New%20folder", b"x")[0] == 409
    assert call("PUT", "chunked.bin/inside.txt", b"x")[0] == 409
    assert call("PUT", "chunked.bin/", b"")[0] == 409
    assert sorted(os.listdir(home / "Uploads")) == ["deep", "fresh.txt"]  # no temporary files


def test_delete(call: Http, home: Path) -> None:
    (home / "a/b").mkdir(parents=True)
    (home / "a/b/f.txt").write_text("x")
    (home / "target.txt").write_text("kept")
    os.symlink("target.txt", home / "link")
    assert call("DELETE", "a")[0] == 409
    assert call("DELETE", "a/b/f.txt")[0] == 204
    assert call("DELETE", "a/b/")[0] == 204 and call("DELETE", "a")[0] == 204
    assert not (home / "a").exists()
    assert call("DELETE", "a")[0] == 404
    assert call("DELETE", "link")[0] == 204  # the link, not what it points to
    assert (home / "target.txt").read_text() == "kept"
    assert call("DELETE", "")[0] == 403


def test_the_agent_token_is_required(call: Http, home: Path) -> None:
    (home / "f.txt").write_text("x")
    for method, body in (("GET", None), ("PUT", b"y"), ("DELETE", None)):
        status, headers, reply = call(method, "f.txt", body, auth=False)
        assert status == 401 and "error" in json.loads(reply)
    assert (home / "f.txt").read_text() == "x"


@pytest.mark.parametrize("path", [
    "a%2Fb", "..", "../x", "a/../b", "%2e%2e/x", "a/%2E%2E", ".", "./x", "a/./b", "/etc/passwd",
    "/", "a//b", "a%00b", "%00", "a%zz", "%ff", "%C3%28", "x" * 256, ("y" * 200 + "/") * 21 + "z",
    ".gsp-upload-1234",
])
def test_bad_paths_are_400_and_touch_nothing(call: Http, home: Path, path: str) -> None:
    before = tree(home.parent)
    for method, body in (("GET", None), ("PUT", b"data"), ("DELETE", None), ("PUT", b"")):
        status, _, reply = call(method, path + ("/" if body == b"" else ""), body)
        assert status == 400, (method, path, reply)
        assert json.loads(reply)["error"]
    assert tree(home.parent) == before


def test_names_that_are_unusual_but_valid(call: Http, home: Path) -> None:
    for name in ("日本語.png", "a b+c&d=e;f", "x" * 255, "emoji 🎨.xcf", "-rf", "%41 literal"):
        status, _, body = call("PUT", quote(name), name.encode())
        assert status == 201, (name, body)
        assert (home / name).read_bytes() == name.encode()
        assert call("GET", quote(name))[2] == name.encode()
    names = {e["name"] for e in json.loads(call("GET", "")[2])["entries"]}
    assert "日本語.png" in names and "%41 literal" in names


async def test_the_size_limit_is_enforced_before_and_while_reading(files_agent: FilesAgent,
                                                                   home: Path) -> None:
    port = files_agent.agent.port
    auth = f"Authorization: Bearer {AUTH['Authorization'].split()[1]}"
    # Declared too large: answered at once, before a byte of the body is sent.
    reply = await raw_request(port, f"PUT /files/big HTTP/1.1\r\nHost: x\r\n{auth}\r\n"
                                    f"Content-Length: {9 << 20}")
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    # With Expect: 100-continue, the refusal comes instead of the 100.
    reply = await raw_request(port, f"PUT /files/big HTTP/1.1\r\nHost: x\r\n{auth}\r\n"
                                    f"Content-Length: {9 << 20}\r\nExpect: 100-continue")
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    # Chunked, so undeclared: refused once it passes the limit, nothing kept.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("PUT", "/files/Uploads/big", body=iter([b"z" * (1 << 20)] * 9), headers=AUTH,
                     encode_chunked=True)
        assert conn.getresponse().status == 413
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused while the client was still sending: also a refusal
    finally:
        conn.close()
    assert not (home / "big").exists() and not (home / "Uploads").exists()
    assert os.listdir(home) == []


def cuts_logged(agent: FilesAgent) -> int:
    return sum('"upload_cut"' in line for line in list(agent.agent.log))


@pytest.mark.parametrize("chunked", [False, True])
async def test_an_upload_cut_at_a_random_byte_leaves_nothing(files_agent: FilesAgent, home: Path,
                                                             chunked: bool) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    (home / "existing.bin").write_bytes(b"old content")
    before = tree(home)
    auth = AUTH["Authorization"]
    for target in ("existing.bin", "new.bin", "New/Folders/new.bin"):
        size = rng.randrange(2, 3 << 20)
        cut = rng.randrange(1, size)
        data = os.urandom(cut)
        if chunked:
            head = f"PUT /files/{target} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked"
            body = f"{size:x}\r\n".encode() + data
        else:
            head = f"PUT /files/{target} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: {size}"
            body = data
        cuts = cuts_logged(files_agent)
        await raw_request(files_agent.agent.port, head, body, cut=True)
        deadline = time.monotonic() + 30
        while cuts_logged(files_agent) == cuts:  # the agent has seen the cut and cleaned up
            assert time.monotonic() < deadline, (seed, target)
            await asyncio.sleep(0.05)
        assert tree(home) == before, (seed, target, size, cut)
    status, _, body = Http(files_agent)("GET", "")
    assert [e["name"] for e in json.loads(body)["entries"]] == ["existing.bin"], seed


def test_symlinks_and_hard_links_out_of_the_home_are_refused(call: Http, home: Path) -> None:
    outside = home.parent / "outside"
    (outside / "secret.txt").write_bytes(SECRET)
    (home / "inside").mkdir()
    (home / "inside/real.txt").write_text("inside")
    os.symlink("../outside", home / "out-dir")
    os.symlink(str(outside / "secret.txt"), home / "abs-link")
    os.symlink("inside/../../outside/secret.txt", home / "sneaky")
    os.symlink("inside", home / "in-dir")  # stays inside: followed
    os.link(outside / "secret.txt", home / "hard.txt")
    before = tree(outside)
    for path in ("out-dir/secret.txt", "abs-link", "sneaky", "out-dir/", "hard.txt"):
        status, _, body = call("GET", path)
        assert status == 403, (path, body)
        assert SECRET not in body
    for path in ("out-dir/new.txt", "abs-link", "sneaky", "hard.txt", "out-dir/x/y.txt"):
        assert call("PUT", path, b"overwritten")[0] == 403, path
    assert call("PUT", "out-dir/", b"")[0] == 403
    assert call("GET", "in-dir/real.txt")[2] == b"inside"
    assert json.loads(call("GET", "in-dir")[2])["entries"][0]["name"] == "real.txt"
    assert call("DELETE", "out-dir/secret.txt")[0] == 403
    assert call("DELETE", "abs-link")[0] == 204  # the link itself goes
    assert tree(outside) == before


# Names planted in the home that lead out, and pieces to build paths from.
PLANTED = {"up": "..", "root": "/", "out": "../outside", "secret": "../outside/secret.txt",
           "loop": "loop", "deep": "d/../../outside"}
SEGMENTS = st.sampled_from(
    [*PLANTED, "d", "..", ".", "%2e%2e", "%2E.", "%2F", "a%2Fb", "%00", "x%00", "%", "%zz", "%c0%af",
     "%ff", "é", "%C3%A9", "日本", "\u202e", "x" * 255, "x" * 256, "", ".gsp-upload-x", "~",
     "secret.txt", "outside", "%2e", "%5C..", "..%5C", "new.txt"])
PATHS = st.builds(lambda lead, parts, slash: ("/" if lead else "") + "/".join(parts) + ("/" if slash else ""),
                  st.booleans(), st.lists(SEGMENTS, min_size=0, max_size=5), st.booleans())
# What a write through the planted links would create outside: in `/`, or beside the home.
ESCAPED_NAMES = ("new.txt", "d", "secret.txt", "x" * 255, "日本", "é", "~")


def outside_of(home: Path) -> dict[str, object]:
    """Everything beside the home, and the names a write could have made in `/`."""
    around = {k: v for k, v in tree(home.parent).items() if k != "home" and not k.startswith("home/")}
    return {"around": around, "root": [n for n in ESCAPED_NAMES if os.path.lexists(f"/{n}")]}


@pytest.fixture(scope="module")
def planted(files_agent: FilesAgent) -> Path:
    home = files_agent.home
    outside = home.parent / "outside"
    (outside / "secret.txt").write_bytes(SECRET)
    (home / "d").mkdir(exist_ok=True)
    for name, target in PLANTED.items():
        if not os.path.lexists(home / name):
            os.symlink(target, home / name)
    return home


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(["GET", "PUT", "DELETE", "HEAD"]), path=PATHS,
       body=st.binary(max_size=64))
def test_no_path_reaches_outside_the_home(call: Http, planted: Path, method: str, path: str,
                                          body: bytes) -> None:
    before = outside_of(planted)
    status, _, reply = call(method, path, body if method == "PUT" else None)
    assert status < 500, (method, path, reply)
    assert SECRET not in reply
    assert outside_of(planted) == before
    if status >= 400 and method != "HEAD":
        assert json.loads(reply)["error"]


_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2


def exchange(a: Path, b: Path) -> None:
    """Swap two names atomically (renameat2 RENAME_EXCHANGE): neither is ever missing."""
    if _libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")


def test_a_symlink_swapped_in_mid_request_redirects_nothing(call: Http, home: Path) -> None:
    """A thread keeps exchanging `swap` between a real folder and a symlink out of the home
    while uploads and downloads go through `swap/`: nothing outside is ever read or written."""
    outside = home.parent / "outside"
    (outside / "secret.txt").write_bytes(SECRET)
    (home / "swap").mkdir()
    (home / "swap/secret.txt").write_text("inside copy")
    os.symlink("../outside", home / "other")
    before = tree(outside)
    stop = threading.Event()
    swaps = [0]

    def swapper() -> None:
        while not stop.is_set():
            exchange(home / "swap", home / "other")
            swaps[0] += 1
    thread = threading.Thread(target=swapper)
    thread.start()
    outcomes: set[int] = set()
    try:
        for i in range(300):
            status, _, reply = call("PUT", f"swap/up{i}.txt", b"uploaded")
            outcomes.add(status)
            status, _, reply = call("GET", "swap/secret.txt")
            outcomes.add(status)
            assert SECRET not in reply
    finally:
        stop.set()
        thread.join()
    assert tree(outside) == before
    assert swaps[0] > 300 and outcomes <= {200, 201, 403, 409}, (swaps, outcomes)
    assert {200, 403} <= outcomes  # both states were met


def test_a_full_disk_is_507_and_leaves_nothing(tmp_path: Path) -> None:
    """The home is an 8 MiB tmpfs; a 16 MiB upload fills it."""
    home = tmp_path / "small"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(home)], check=True)
    try:
        (home / "kept.txt").write_text("already here")
        free_before = os.statvfs(home).f_bfree
        with run_agent(home) as agent:
            call = Http(agent)
            data = os.urandom(16 << 20)
            for path, headers in (("big.bin", {}), ("Deep/New/big.bin", {}),
                                  ("kept.txt", {"If-Match": "*"})):
                status, _, body = call("PUT", path, data, headers)
                assert status == 507, (path, body)
                assert "full" in json.loads(body)["error"]
                assert sorted(os.listdir(home)) == ["kept.txt"]
                assert (home / "kept.txt").read_text() == "already here"
                assert os.statvfs(home).f_bfree == free_before
            # The disk is usable again at once.
            assert call("PUT", "small.txt", b"fits")[0] == 201
    finally:
        subprocess.run(["umount", "-l", str(home)], check=True)
