"""`session_agent/files/home.py` on a real file system, with both resolvers (openat2, and the
O_NOFOLLOW walk used where openat2 is missing): the same confinement either way."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session_agent.files.home import FileError, Home
from session_agent.files.paths import UPLOAD_PREFIX, PathError, parse
from tests.files.conftest import tree

SECRET = b"outside-the-home-secret"


@pytest.fixture(params=["openat2", "walk"])
def home(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Home]:
    (tmp_path / "home").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/secret.txt").write_bytes(SECRET)
    h = Home(str(tmp_path / "home"), request.param)
    assert h.resolver.method == request.param
    yield h
    h.close()


def put(home: Home, raw: str, data: bytes, **conditions: str) -> bool:
    upload = home.begin_upload(parse(raw), conditions.get("if_match"), conditions.get("if_none_match"))
    try:
        upload.write([data])
        return upload.commit(conditions.get("if_match"), conditions.get("if_none_match"))[0]
    finally:
        upload.abort()


def read(home: Home, raw: str) -> bytes | dict:
    kind, result = home.open_get(parse(raw))
    if kind == "dir":
        return result
    fd, _ = result
    try:
        return os.read(fd, 1 << 20)
    finally:
        os.close(fd)


def test_both_resolvers_do_the_same_for_plain_paths(home: Home) -> None:
    root = Path(home.path)
    assert put(home, "a/b/c.txt", b"one") is True
    assert put(home, "a/b/c.txt", b"two") is False
    assert (root / "a/b/c.txt").read_bytes() == b"two" == read(home, "a/b/c.txt")
    assert read(home, "a")["entries"][0]["name"] == "b"
    assert home.make_dir(parse("x/y/")) is True and home.make_dir(parse("x/y/")) is False
    home.delete(parse("a/b/c.txt"))
    with pytest.raises(FileError) as err:
        home.delete(parse("a"))
    assert err.value.status == 409


def test_symlinks_inside_the_home_are_followed_only_by_openat2(home: Home) -> None:
    root = Path(home.path)
    (root / "real").mkdir()
    (root / "real/f.txt").write_text("inside")
    os.symlink("real", root / "alias")
    if home.resolver.method == "openat2":
        assert read(home, "alias/f.txt") == b"inside"
    else:
        with pytest.raises(FileError) as err:
            read(home, "alias/f.txt")
        assert err.value.status == 403


def test_links_out_of_the_home_are_refused(home: Home) -> None:
    root, outside = Path(home.path), Path(home.path).parent / "outside"
    os.symlink("../outside", root / "out")
    os.symlink(str(outside / "secret.txt"), root / "abs")
    os.link(outside / "secret.txt", root / "hard")
    before = tree(outside)
    for raw in ("out/secret.txt", "abs", "hard", "out/"):
        with pytest.raises(FileError) as err:
            read(home, raw)
        assert err.value.status == 403, raw
    for raw in ("out/new.txt", "abs", "hard", "out/deep/new.txt"):
        with pytest.raises(FileError) as err:
            put(home, raw, b"x")
        assert err.value.status == 403, raw
    with pytest.raises(FileError):
        home.make_dir(parse("out/new/"))
    home.delete(parse("abs"))  # the link goes, never its target
    assert tree(outside) == before


def test_a_folder_moved_out_of_the_home_mid_upload_gets_nothing(home: Home) -> None:
    root, outside = Path(home.path), Path(home.path).parent / "outside"
    upload = home.begin_upload(parse("Uploads/photo.png"))
    upload.write([b"data"])
    os.rename(root / "Uploads", outside / "moved")  # the application moves it away meanwhile
    with pytest.raises(FileError) as err:
        upload.commit()
    assert err.value.status == 409
    assert os.listdir(outside / "moved") == []


def test_without_o_tmpfile_the_temporary_name_is_hidden_and_swept(home: Home) -> None:
    root = Path(home.path)
    home.tmpfile = False
    (root / "Uploads").mkdir()
    stale = root / f"Uploads/{UPLOAD_PREFIX}0123456789abcdef"
    stale.write_bytes(b"left by a killed agent")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    upload = home.begin_upload(parse("Uploads/photo.png"))
    upload.write([b"half"])
    names = os.listdir(root / "Uploads")
    assert len(names) == 1 and names[0].startswith(UPLOAD_PREFIX)  # stale one swept, ours there
    assert read(home, "Uploads")["entries"] == []  # never listed
    upload.abort()
    assert os.listdir(root / "Uploads") == []
    assert put(home, "Uploads/photo.png", b"whole") is True
    assert put(home, "Uploads/photo.png", b"again") is False
    with pytest.raises(FileError) as err:
        put(home, "Uploads/photo.png", b"x", if_none_match="*")
    assert err.value.status == 412
    assert os.listdir(root / "Uploads") == ["photo.png"]
    assert (root / "Uploads/photo.png").read_bytes() == b"again"


def test_a_failed_upload_removes_the_folders_it_made(home: Home) -> None:
    root = Path(home.path)
    (root / "Keep").mkdir()
    upload = home.begin_upload(parse("Keep/New/Deeper/f.bin"))
    upload.write([b"x"])
    upload.abort()
    assert os.listdir(root) == ["Keep"] and os.listdir(root / "Keep") == []


PLANTED = {"up": "..", "root": "/", "out": "../outside", "secret": "../outside/secret.txt",
           "loop": "loop", "deep": "d/../../outside", "dangling": "../outside/nothing"}
SEGMENTS = st.sampled_from([*PLANTED, "d", "secret.txt", "new", "é", "x" * 255, "outside", "nothing"])
RAW = st.builds(lambda parts, slash: "/".join(parts) + ("/" if slash else ""),
                st.lists(SEGMENTS, min_size=1, max_size=4), st.booleans())


@pytest.mark.parametrize("method", ["openat2", "walk"])
def test_no_operation_reaches_outside(tmp_path: Path, method: str) -> None:
    (tmp_path / "home/d").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/secret.txt").write_bytes(SECRET)
    for name, target in PLANTED.items():
        os.symlink(target, tmp_path / "home" / name)
    home = Home(str(tmp_path / "home"), method)

    def outside() -> dict:
        return {k: v for k, v in tree(tmp_path).items() if not k.startswith("home")}
    before = outside()
    root_names = {n for n in ("new", "d", "nothing", "secret.txt") if os.path.lexists(f"/{n}")}

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(raw=RAW, op=st.sampled_from(["get", "put", "mkdir", "delete"]))
    def run(raw: str, op: str) -> None:
        try:
            path = parse(raw)
            if op == "get":
                result = read(home, raw)
                assert SECRET not in (result if isinstance(result, bytes) else repr(result).encode())
            elif op == "put":
                if path.directory:
                    home.make_dir(path)
                else:
                    put(home, raw, b"written")
            elif op == "mkdir":
                home.make_dir(parse(raw.rstrip("/") + "/"))
            else:
                home.delete(path)
        except (FileError, PathError):
            pass
        assert outside() == before
        assert {n for n in ("new", "d", "nothing", "secret.txt") if os.path.lexists(f"/{n}")} == root_names
    try:
        run()
    finally:
        home.close()
