"""Hypothesis strategies for what reaches the platform from outside: WHEP offers and headers,
session-create bodies and query strings, JWTs and cookies. Most inputs are a valid one bent a
little (the code paths behind the first check), the rest is noise."""
from __future__ import annotations

import json
import time
from typing import Any

import jwt
from hypothesis import strategies as st

from tests.gateway.conftest import JWT_SECRET
from tests.input.strategies import json_values

# A browser-like offer (aiortc's, candidates on loopback): video receive-only, `input` channel.
OFFER = "\r\n".join([
    "v=0", "o=- 4004658162 4004658162 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
    "a=msid-semantic:WMS *", "m=video 34814 UDP/TLS/RTP/SAVPF 97 98 99 100 101 102",
    "c=IN IP4 127.0.0.1", "a=recvonly", "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=mid:0", "a=rtcp:9 IN IP4 0.0.0.0", "a=rtcp-mux",
    "a=ssrc-group:FID 1394288452 2893820385", "a=ssrc:1394288452 cname:6d0c9698",
    "a=ssrc:2893820385 cname:6d0c9698", "a=rtpmap:97 VP8/90000", "a=rtcp-fb:97 nack pli",
    "a=rtpmap:98 rtx/90000", "a=fmtp:98 apt=97", "a=rtpmap:99 H264/90000",
    "a=fmtp:99 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
    "a=rtpmap:100 rtx/90000", "a=fmtp:100 apt=99", "a=rtpmap:101 H264/90000",
    "a=rtcp-fb:101 nack pli",
    "a=fmtp:101 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    "a=rtpmap:102 rtx/90000", "a=fmtp:102 apt=101",
    "a=candidate:f957a2332b1715da3b0ef8ba684454eb 1 udp 2130706431 127.0.0.1 34814 typ host",
    "a=end-of-candidates", "a=ice-ufrag:Vr30", "a=ice-pwd:iSkMX6TkbMgfD7wQ59wsla",
    "a=fingerprint:sha-256 FB:11:9A:CF:BB:D8:AA:B6:27:90:F8:29:0B:4A:D0:41:3C:B1:0E:CC:04:DA:"
    "B4:36:56:A6:9E:B3:AD:F4:F3:9D", "a=setup:actpass",
    "m=application 37894 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 127.0.0.1", "a=mid:1",
    "a=sctp-port:5000", "a=max-message-size:262144",
    "a=candidate:f957a2332b1715da3b0ef8ba684454eb 1 udp 2130706431 127.0.0.1 37894 typ host",
    "a=end-of-candidates", "a=ice-ufrag:Vr30", "a=ice-pwd:iSkMX6TkbMgfD7wQ59wsla",
    "a=fingerprint:sha-256 FB:11:9A:CF:BB:D8:AA:B6:27:90:F8:29:0B:4A:D0:41:3C:B1:0E:CC:04:DA:"
    "B4:36:56:A6:9E:B3:AD:F4:F3:9D", "a=setup:actpass", ""])
_LINES = OFFER.split("\r\n")

sdp_tokens = st.sampled_from(["m=video 9 UDP/TLS/RTP/SAVPF 96", "m=audio 9 RTP/AVP 0", "v=0",
                              "a=rtpmap:96 H264/90000", "a=rtpmap:-1 VP8/90000",
                              "a=fmtp:96 packetization-mode=1", "a=fmtp:99 ;;==;",
                              "a=setup:active", "a=ice-ufrag:", "a=fingerprint:sha-1 00",
                              "a=mid:", "a=rtcp-fb:* nack", "c=IN IP6 ::1", "m=", "a=",
                              "a=ssrc:99999999999999999999 cname:x", "m=video 70000 X 1"])


@st.composite
def mutated_offer(draw: st.DrawFn) -> str:
    """The real offer with lines dropped, duplicated, swapped, replaced, or cut short."""
    lines = list(_LINES)
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["drop", "dup", "swap", "replace", "edit", "insert"]))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "replace":
            lines[i] = draw(sdp_tokens | st.text(max_size=40))
        elif op == "edit":
            cut = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:cut] + draw(st.text(max_size=8)) + lines[i][cut:]
        else:
            lines.insert(i, draw(sdp_tokens))
        if not lines:
            break
    text = draw(st.sampled_from(["\r\n", "\n"])).join(lines)
    if draw(st.integers(0, 9)) == 0:
        text = text[:draw(st.integers(0, len(text)))]
    return text


offers = (mutated_offer().map(str.encode)
          | st.just(OFFER.encode())
          | st.text(max_size=200).map(str.encode)
          | st.binary(max_size=200)
          | st.builds(lambda a, b: a + b, st.just(OFFER.encode()), st.binary(max_size=20)))

content_types = st.sampled_from([
    "application/sdp", "application/sdp; charset=utf-8", "Application/SDP", "text/plain",
    "application/json", "application/trickle-ice-sdpfrag", "", "application/sdp, text/plain",
    "multipart/form-data; boundary=x", "*/*"]) | st.text(max_size=20)


def authorizations(token: str) -> st.SearchStrategy[str | None]:
    """Mostly the right bearer token, sometimes wrong, malformed or absent."""
    right = f"Bearer {token}"
    return st.sampled_from([right, right, right, None, f"bearer  {token} ", "Bearer",
                            f"Basic {token}", f"Bearer {token}x", "Bearer \t", f"Bearer {token[:-1]}"]
                           ) | st.text(max_size=30)


def header_safe(text: str) -> bool:
    """What an HTTP client (requests) can send as a header value at all."""
    return text.isprintable() and text.isascii() and not text[:1].isspace()


extra_headers = st.dictionaries(
    st.sampled_from(["If-Match", "Origin", "Accept", "X-Forwarded-For", "Cookie", "Link",
                     "Accept-Encoding", "X-Custom"]),
    st.text(max_size=30).filter(header_safe), max_size=3)

peer_ids = (st.text(alphabet=st.characters(codec="ascii", exclude_characters="/?#%"),
                    min_size=1, max_size=40).filter(lambda s: s not in (".", ".."))
            | st.sampled_from(["x" * 200, "abc", "-", "_", "~"]))

# --- the session API -----------------------------------------------------------------------
resource_values = (st.sampled_from(["1", "500m", "2Gi", "0.5", "1e3", "-1", "", "1.5", "2 Gi",
                                    "9" * 17, "1Ki", "Infinity"])
                   | st.integers(-5, 10 ** 18) | st.floats(allow_nan=True) | st.booleans()
                   | st.none() | st.text(max_size=10))
create_like = st.fixed_dictionaries(
    {"application": st.sampled_from(["gimp", "inkscape", "blender", "gimp", "GIMP", ""])
     | json_values},
    optional={"resources": st.dictionaries(st.sampled_from(["cpu", "memory", "gpu", "disk"]),
                                            resource_values, max_size=3) | json_values,
              "timeout": st.integers(-10, 10 ** 7) | st.sampled_from([1, 3600, 604800, 604801])
              | json_values,
              "extra": json_values})
valid_create = st.fixed_dictionaries(
    {"application": st.sampled_from(["gimp", "inkscape", "blender"])},
    optional={"resources": st.none() | st.fixed_dictionaries({}, optional={
                  "cpu": st.sampled_from(["1", "500m", "0.5", "2"]) | st.integers(0, 64),
                  "memory": st.sampled_from(["2Gi", "512Mi", "1G", "100k"]),
                  "gpu": st.sampled_from(["0", "1"]) | st.integers(0, 4)}),
              "timeout": st.none() | st.integers(1, 7 * 24 * 3600)})
# Mostly objects shaped like a create request: they get past the first checks.
create_bodies: st.SearchStrategy[Any] = valid_create | create_like | create_like | json_values


def encode_body(body: Any) -> bytes:
    return json.dumps(body).encode()


raw_bodies = (create_bodies.map(encode_body) | st.binary(max_size=60)
              | st.just(b"[" * 5000 + b"]" * 5000) | st.just(b'{"application": "gimp"'))
query_strings = st.dictionaries(
    st.sampled_from(["token", "limit", "user", "phase", "application", "a", "id"])
    | st.text(max_size=8), st.text(max_size=20), max_size=4)

# --- credentials ----------------------------------------------------------------------------
claims = st.fixed_dictionaries(
    {}, optional={"sub": st.text(max_size=20) | json_values | st.just("alice"),
                  "exp": st.integers(-10 ** 10, 10 ** 10) | st.just(int(time.time()) + 3600)
                  | json_values,
                  "tier": st.sampled_from(["premium", "standard", "x" * 40, "a b"]) | json_values,
                  "nbf": st.integers(0, 2 ** 40) | json_values,
                  "iat": st.integers(0, 2 ** 40) | json_values,
                  "aud": st.text(max_size=8)})


good_claims = st.fixed_dictionaries(
    {"sub": st.sampled_from(["alice", "bob@example.org", "ü", "x" * 256, "x" * 257, "a\tb", ""])
     | st.text(max_size=20), "exp": st.just(int(time.time()) + 3600)},
    optional={"tier": st.sampled_from(["premium", "standard", "x" * 40, "a b"])})


@st.composite
def tokens(draw: st.DrawFn) -> str:
    """JWTs signed right or wrong, with any algorithm, any claims, and mangled text."""
    body = draw(good_claims | claims)
    algorithm = draw(st.sampled_from(["HS256", "HS256", "HS384", "HS512", "none"]))
    secret = draw(st.sampled_from([JWT_SECRET, JWT_SECRET, "wrong-secret-" * 6]))
    try:
        token = jwt.encode(body, secret if algorithm != "none" else None, algorithm=algorithm)
    except (TypeError, ValueError):  # claims PyJWT itself refuses to encode (e.g. exp "x")
        token = draw(st.text(max_size=40))
    mangle = draw(st.integers(0, 5))
    if mangle == 1 and token:
        i = draw(st.integers(0, len(token) - 1))
        token = token[:i] + draw(st.text(max_size=3)) + token[i + 1:]
    elif mangle == 2:
        token = token.rsplit(".", 1)[0] + "."
    return token


cookie_values = tokens() | st.text(max_size=60) | st.just("test-token")
