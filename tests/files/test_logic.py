"""The pure parts of the files service: path parsing and the HTTP semantics (no I/O)."""
from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from session_agent.files.headers import (RangeNotSatisfiable, attachment, byte_range, content_type,
                                         precondition_failed, rfc3339)
from session_agent.files.paths import NAME_MAX, FilePath, PathError, parse


def test_paths_parse_to_segments() -> None:
    assert parse("") == FilePath((), True)
    assert parse("a") == FilePath(("a",), False)
    assert parse("a/b/") == FilePath(("a", "b"), True)
    assert parse("New%20folder/%C3%A9t%C3%A9.png") == FilePath(("New folder", "été.png"), False)
    assert parse("%2E.hidden") == FilePath(("..hidden",), False)  # only exactly "." and ".." are dots
    assert parse("a%25b") == FilePath(("a%b",), False)
    assert parse("a/b").text == "a/b" and parse("").text == ""


@pytest.mark.parametrize("raw", ["/", "/a", "a//b", "..", "a/../b", "%2e%2E", ".", "a/./b", "a%2Fb",
                                 "a%2fb", "%00", "a%00", "%", "%4", "%zz", "%ff", "%c3%28", "é\udcff",
                                 "x" * (NAME_MAX + 1), "a/" * 200 + "b", ".gsp-upload-abc"])
def test_bad_paths_say_why(raw: str) -> None:
    with pytest.raises(PathError) as err:
        parse(raw)
    assert str(err.value)


NAMES = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60).filter(
    lambda n: n not in (".", "..") and "/" not in n and "\0" not in n and not n.startswith(".gsp-upload-"))


@settings(max_examples=300, deadline=None)
@given(st.lists(NAMES, min_size=1, max_size=6), st.booleans())
def test_every_encoded_name_round_trips(names: list[str], directory: bool) -> None:
    raw = "/".join(quote(n, safe="") for n in names) + ("/" if directory else "")
    assert parse(raw) == FilePath(tuple(names), directory)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80))
def test_whatever_parses_is_a_plain_relative_name(raw: str) -> None:
    try:
        path = parse(raw)
    except PathError:
        return
    for name in path.segments:
        assert name and name not in (".", "..") and "/" not in name and "\0" not in name
        assert len(name.encode()) <= NAME_MAX


def test_ranges() -> None:
    assert byte_range(None, 100) is None
    assert byte_range("bytes=0-9", 100) == (0, 9)
    assert byte_range("bytes=90-", 100) == (90, 99)
    assert byte_range("bytes=90-500", 100) == (90, 99)
    assert byte_range("bytes=-10", 100) == (90, 99)
    assert byte_range("bytes=-500", 100) == (0, 99)
    for ignored in ("bytes=5-1", "bytes=0-1,3-4", "items=0-1", "bytes=-", "garbage", "bytes=a-b"):
        assert byte_range(ignored, 100) is None, ignored
    for unsatisfiable, size in (("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0), ("bytes=-5", 0)):
        with pytest.raises(RangeNotSatisfiable):
            byte_range(unsatisfiable, size)
    assert byte_range("bytes=0-9", 100, '"a"', ('"a"', "date")) == (0, 9)
    assert byte_range("bytes=0-9", 100, '"b"', ('"a"', "date")) is None


def test_conditions() -> None:
    tag = '"1-2-3"'
    assert not precondition_failed(None, None, None)
    assert precondition_failed(None, "*", tag) and not precondition_failed(None, "*", None)
    assert precondition_failed(tag, None, None) and not precondition_failed(tag, None, tag)
    assert not precondition_failed("*", None, tag) and precondition_failed("*", None, None)
    assert not precondition_failed(f'"x", {tag}', None, tag)
    assert precondition_failed(f"W/{tag}", None, tag)  # a weak tag never matches If-Match
    assert precondition_failed(None, f"W/{tag}", tag)  # but does If-None-Match


def test_names_and_types() -> None:
    assert content_type("a.png") == "image/png" and content_type("a.XCF") != ""
    assert content_type("no-extension") == "application/octet-stream"
    assert attachment("plain.txt") == "attachment; filename=\"plain.txt\"; filename*=UTF-8''plain.txt"
    header = attachment('quo"te\\ é.png')
    assert header.startswith('attachment; filename="quo_te_ _.png"; ') and "%C3%A9" in header
    assert "\n" not in attachment("new\nline") and "\r" not in attachment("a\rb")
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
