"""Codec choice for a WHEP offer (pure SDP logic).

aiortc, as the answerer, keeps the offer's codec order, and browsers offer VP8 first. We want
H.264 (the shared encoder's codec) whenever the offer allows it, so the answering transceiver
is created before the offer is applied, with codec preferences naming only the chosen codec.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from aiortc import RTCRtpCodecCapability, RTCRtpSender

# H.264 profiles aiortc's packetizer negotiates: constrained baseline and baseline.
_H264_PROFILES = ("42e0", "4200")


class OfferError(ValueError):
    """The body is not a usable WHEP offer; the message says why."""


@dataclass(frozen=True)
class OfferedCodec:
    payload_type: int
    name: str                 # lower-case encoding name: "h264", "vp8", "rtx", ...
    fmtp: dict[str, str]


def video_codecs(sdp: str) -> list[OfferedCodec]:
    """Codecs of the first video m-line, in offer order."""
    lines = sdp.splitlines()
    m_index = next((i for i, l in enumerate(lines) if l.startswith("m=video ")), None)
    if m_index is None:
        return []
    parts = lines[m_index].split()
    order = [int(p) for p in parts[3:] if p.isdigit()]
    names: dict[int, str] = {}
    fmtps: dict[int, dict[str, str]] = {}
    for line in lines[m_index + 1:]:
        if line.startswith("m="):
            break
        if m := re.match(r"a=rtpmap:(\d+) ([^/\s]+)/", line):
            names[int(m.group(1))] = m.group(2).lower()
        elif m := re.match(r"a=fmtp:(\d+) (.*)", line):
            params = {}
            for item in m.group(2).split(";"):
                key, _, value = item.strip().partition("=")
                if key:
                    params[key.lower()] = value
            fmtps[int(m.group(1))] = params
    return [OfferedCodec(pt, names.get(pt, ""), fmtps.get(pt, {})) for pt in order]


def _h264_usable(codec: OfferedCodec) -> bool:
    profile = codec.fmtp.get("profile-level-id", "42e01f").lower()
    return (codec.name == "h264" and codec.fmtp.get("packetization-mode", "0") == "1"
            and profile.startswith(_H264_PROFILES))


def choose_codec(codecs: list[OfferedCodec], prefer: str) -> OfferedCodec:
    """The codec to send: `prefer` ("h264" or "vp8") when offered, else the other one."""
    h264 = next((c for c in codecs if _h264_usable(c)), None)
    vp8 = next((c for c in codecs if c.name == "vp8"), None)
    order = (vp8, h264) if prefer == "vp8" else (h264, vp8)
    chosen = next((c for c in order if c is not None), None)
    if chosen is None:
        raise OfferError("offer has no H.264 (packetization-mode 1, baseline) or VP8 video codec")
    return chosen


def codec_preferences(codec: str) -> list[RTCRtpCodecCapability]:
    """Transceiver preferences that make aiortc answer with `codec` (and its RTX) only."""
    caps = RTCRtpSender.getCapabilities("video").codecs
    chosen = [c for c in caps if c.mimeType.lower() == f"video/{codec}"]
    # Constrained baseline first: what libx264 ultrafast and NVENC's baseline output is.
    chosen.sort(key=lambda c: c.parameters.get("profile-level-id", "") != "42e01f")
    return chosen + [c for c in caps if c.mimeType.lower() == "video/rtx"]


_DIRECTIONS = ("a=sendrecv", "a=recvonly", "a=sendonly", "a=inactive")


def with_default_directions(sdp: str) -> str:
    """The offer with `a=sendrecv` on each media section that names no direction: the SDP
    default (RFC 4566), which aiortc does not apply itself."""
    eol = "\r\n" if "\r\n" in sdp else "\n"
    out: list[str] = []
    section: list[str] = []

    def flush() -> None:
        if section and section[0].startswith("m=") and not any(l.startswith(_DIRECTIONS) for l in section):
            section.insert(1, "a=sendrecv")
        out.extend(section)

    for line in sdp.split(eol):
        if line.startswith("m="):
            flush()
            section = []
        section.append(line)
    flush()
    return eol.join(out)


def validate_offer(sdp: str) -> None:
    """Reject what is plainly not an SDP offer for receiving video, with a reason."""
    if not sdp.strip():
        raise OfferError("empty body: expected an SDP offer")
    if not sdp.lstrip().startswith("v=0"):
        raise OfferError("body is not SDP: it must start with v=0")
    if "\nm=video " not in "\n" + sdp.replace("\r\n", "\n"):
        raise OfferError("offer has no video m-line")
    if "a=ice-ufrag:" not in sdp or "a=fingerprint:" not in sdp:
        raise OfferError("offer lacks ICE credentials or a DTLS fingerprint")


def without_mdns_candidates(sdp: str) -> str:
    """The offer without its `.local` (mDNS) host candidates.

    Browsers hide their host addresses behind random `<uuid>.local` names. aioice resolves each
    one while the offer is applied, and across a NAT (or anywhere mDNS does not reach) every
    answer then waits for its 1 s resolve timeout. Such a name can only resolve on the
    browser's own link; wherever it could, the browser's connectivity checks reach the agent
    anyway and ICE learns the browser's address from them as a peer-reflexive candidate (RFC
    8445 7.3.1.3). A section left with no candidate at all also loses `a=end-of-candidates`:
    aioice would otherwise fail at once, before those checks arrive.
    """
    eol = "\r\n" if "\r\n" in sdp else "\n"
    out: list[str] = []
    section: list[str] = []

    def flush() -> None:
        kept = [l for l in section if not _is_mdns_candidate(l)]
        if len(kept) != len(section) and not any(l.startswith("a=candidate:") for l in kept):
            kept = [l for l in kept if l.strip() != "a=end-of-candidates"]
        out.extend(kept)

    for line in sdp.split(eol):
        if line.startswith("m="):
            flush()
            section = []
        section.append(line)
    flush()
    return eol.join(out)


def _is_mdns_candidate(line: str) -> bool:
    # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> …
    if not line.startswith("a=candidate:"):
        return False
    fields = line.split()
    return len(fields) > 4 and fields[4].lower().rstrip(".").endswith(".local")
