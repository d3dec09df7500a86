"""A viewer process for the lab: run it inside the client namespace with `ip netns exec`.

    python -m tests.netlab.viewer URL [--token T] [--transport webrtc] [--ice-servers]
                                  [--only-url TEXT] [--relay-only] [--mdns] [--frames] [--seconds S]

URL is the WHEP endpoint (`https://…/streaming/{id}/whep`). `--ice-servers` asks `OPTIONS`
for the `Link` ICE servers first, as the web viewer does (aiortc uses the first TURN URL only:
`--only-url ?transport=tcp` picks one); `--relay-only` uses only TURN relay
candidates; `--mdns` hides the offer's host addresses behind `.local` names as Chromium does.
A self-signed gateway is trusted through SSL_CERT_FILE.

Lines of JSON on stdout: `{"event": "connected", "answer_ms", "connect_ms", "pair"}` once
media flows; with `--frames` one `{"event": "frame", "t", "rgb"}` per decoded frame (`t`:
CLOCK_MONOTONIC, shared by every namespace; `rgb`: the colour at `--probe`); at the end (after
`--seconds`, or on a `quit` line or EOF on stdin) `{"event": "summary", "frames",
"longest_gap_ms", "nacked", "retransmitted", "lost", "remb_kbps"}`. Every other line read from stdin is a
JSON message sent on the `input` data channel. The transport is a parameter: `webrtc` (aiortc,
completing frames on the marker bit as a browser does: see MarkerJitterBuffer) or `ws` (the
WebSocket transport at the same URL's `…/ws`: each access unit decoded with PyAV as it
arrives; its summary has no NACK or REMB figures, TCP keeps those to itself).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
import uuid
from typing import Any
from urllib.parse import urljoin

import aiohttp
import aiortc.rtcrtpreceiver as rtp_receiver
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError

COUNTS = {"nacked": 0, "retransmitted": 0}
REMB_KBPS: list[int] = []  # every estimate the receiver sent back (REMB)


class MarkerJitterBuffer(JitterBuffer):
    """Completes a frame on its RTP marker bit, as browsers do (stock aiortc waits for the
    next frame's first packet, a frame interval more); the same change as bench/agent_media.py."""

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        packets = []
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None:
                return None
            if packets and packet.timestamp != packets[0].timestamp:  # previous frame had no marker
                self.remove(count)
                return JitterFrame(b"".join(p._data for p in packets), packets[0].timestamp)
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                return JitterFrame(b"".join(p._data for p in packets), packets[0].timestamp)
        return None


rtp_receiver.JitterBuffer = MarkerJitterBuffer


def _count_nacks() -> None:
    """Count what the receiver asks again (NACK) and what comes back (RTX); keep its REMBs."""
    send_nack = rtp_receiver.RTCRtpReceiver._send_rtcp_nack
    unwrap = rtp_receiver.unwrap_rtx
    pack_remb = rtp_receiver.pack_remb_fci

    def remb(bitrate: int, ssrcs: list[int]) -> bytes:
        REMB_KBPS.append(round(bitrate / 1000))
        return pack_remb(bitrate, ssrcs)
    rtp_receiver.pack_remb_fci = remb

    async def nack(self, media_ssrc: int, lost: list[int]) -> None:
        COUNTS["nacked"] += len(lost)
        await send_nack(self, media_ssrc, lost)

    def unwrap_rtx(*args: Any, **kwargs: Any):
        COUNTS["retransmitted"] += 1
        return unwrap(*args, **kwargs)
    rtp_receiver.RTCRtpReceiver._send_rtcp_nack = nack
    rtp_receiver.unwrap_rtx = unwrap_rtx


def parse_links(values: list[str]) -> list[RTCIceServer]:
    """`Link: <turn:…>; rel="ice-server"; username="…"; credential="…"` (RFC 9725 4.6)."""
    servers = []
    for value in values:
        for link in re.split(r",(?=\s*<)", value):
            url = re.search(r"<([^>]+)>", link)
            if not url or not re.search(r'rel="?ice-server"?', link):
                continue
            user = re.search(r'username="([^"]*)"', link)
            credential = re.search(r'credential="([^"]*)"', link)
            servers.append(RTCIceServer(urls=url.group(1), username=user and user.group(1),
                                        credential=credential and credential.group(1)))
    return servers


def hide_host_addresses(sdp: str) -> str:
    """Chromium's offer shape: host candidates named `<uuid>.local`, `c=` 0.0.0.0."""
    names: dict[str, str] = {}

    def rename(m: re.Match[str]) -> str:
        name = names.setdefault(m.group(2), f"{uuid.uuid4()}.local")
        return f"{m.group(1)}{name}{m.group(3)}"
    sdp = re.sub(r"(a=candidate:\S+ \d+ udp \d+ )(\S+)( \d+ typ host)", rename, sdp)
    return re.sub(r"c=IN IP4 \S+", "c=IN IP4 0.0.0.0", sdp)


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def probe_rgb(frame, at: tuple[float, float]) -> list[int]:
    """The colour at `at` (fractions of width and height), from a 32×18 thumbnail: a full-size
    RGB conversion per frame would slow the client down."""
    tiny = frame.reformat(width=32, height=18, format="rgb24").to_ndarray()
    return [int(v) for v in tiny[min(17, int(at[1] * 18)), min(31, int(at[0] * 32))]]


async def webrtc(args: argparse.Namespace) -> dict[str, Any]:
    _count_nacks()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    async with aiohttp.ClientSession() as http:
        servers: list[RTCIceServer] = []
        if args.ice_servers:
            async with http.options(args.url, headers=headers) as r:
                servers = parse_links(r.headers.getall("Link", []))
            if args.only_url:  # aiortc uses the first TURN URL only: pick the one to test
                servers = [s for s in servers if args.only_url in s.urls]
        config = RTCConfiguration(iceServers=servers)  # none: no STUN to the internet either
        pc = RTCPeerConnection(config)
        if args.relay_only:
            _relay_only(pc)
        pc.addTransceiver("video", direction="recvonly")
        channel = pc.createDataChannel("input")
        opened = asyncio.Event()
        channel.on("open", opened.set)
        arrivals: list[float] = []
        got_frame = asyncio.Event()

        async def receive(track) -> None:
            try:
                while True:
                    frame = await track.recv()
                    now = time.monotonic()
                    arrivals.append(now)
                    got_frame.set()
                    if args.frames:
                        emit("frame", t=now, rgb=probe_rgb(frame, args.probe), w=frame.width, h=frame.height)
            except MediaStreamError:
                pass
        tasks: list[asyncio.Task] = []
        pc.on("track", lambda track: tasks.append(asyncio.ensure_future(receive(track))))
        start = time.monotonic()
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        if args.mdns:
            offer = hide_host_addresses(offer)
        sent = time.monotonic()
        async with http.post(args.url, data=offer, headers={**headers, "Content-Type": "application/sdp"}) as r:
            answer = await r.text()
            if r.status != 201:
                emit("error", status=r.status, body=answer)
                await pc.close()
                return {"error": answer}
            location = r.headers.get("Location")
        answer_ms = (time.monotonic() - sent) * 1000
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await asyncio.wait_for(opened.wait(), args.timeout)
        await asyncio.wait_for(got_frame.wait(), args.timeout)
        emit("connected", answer_ms=round(answer_ms, 2), connect_ms=round((time.monotonic() - start) * 1000, 1),
             pair=_pair(pc))
        frames_at_connect = len(arrivals)
        await _drive(channel, args.seconds)
        gaps = [b - a for a, b in zip(arrivals[frames_at_connect:], arrivals[frames_at_connect + 1:])]
        stats = await _inbound(pc)
        summary = {"frames": len(arrivals), "longest_gap_ms": round(max(gaps, default=0) * 1000, 1),
                   **COUNTS, **stats, "remb_kbps": REMB_KBPS}
        if location:
            async with http.delete(urljoin(args.url, location), headers=headers):
                pass
        for task in tasks:
            task.cancel()
        await pc.close()
        return summary


def _relay_only(pc: RTCPeerConnection) -> None:
    """Gather relay candidates only (aiortc has no iceTransportPolicy setting)."""
    import aioice.ice
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: []


def _pair(pc: RTCPeerConnection) -> dict[str, str] | None:
    for transceiver in pc.getTransceivers():
        ice = transceiver.receiver.transport.transport
        connection = getattr(ice, "_connection", None)
        pairs = getattr(connection, "_nominated", {}) if connection else {}
        for pair in pairs.values():
            return {"local": f"{pair.local_candidate.type} {pair.local_candidate.host}:{pair.local_candidate.port}",
                    "remote": f"{pair.remote_candidate.type} {pair.remote_candidate.host}:{pair.remote_candidate.port}"}
    return None


async def _inbound(pc: RTCPeerConnection) -> dict[str, Any]:
    for transceiver in pc.getTransceivers():
        report = await transceiver.receiver.getStats()
        for stat in report.values():
            if stat.type == "inbound-rtp":
                return {"packets": stat.packetsReceived, "lost": stat.packetsLost}
    return {}


async def _drive(channel, seconds: float) -> None:
    """Send stdin's lines on the channel until `quit`, EOF or `seconds`."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    deadline = loop.time() + seconds
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        try:
            line = await asyncio.wait_for(reader.readline(), remaining)
        except asyncio.TimeoutError:
            return
        text = line.decode().strip()
        if not line or text == "quit":
            return
        if text:
            channel.send(text)
            emit("sent", message=json.loads(text))


async def ws(args: argparse.Namespace) -> dict[str, Any]:
    import av
    url = re.sub(r"/whep/?$", "/ws", args.url)
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    decoder = av.CodecContext.create("h264", "r")
    arrivals: list[float] = []
    got_frame = asyncio.Event()
    start = time.monotonic()
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, headers=headers, compress=0, max_msg_size=0) as socket:
            async def receive() -> None:
                async for message in socket:
                    if message.type != aiohttp.WSMsgType.BINARY or len(message.data) < 16 or message.data[0] != 1:
                        continue
                    for frame in decoder.decode(av.Packet(message.data[16:])):
                        now = time.monotonic()
                        arrivals.append(now)
                        got_frame.set()
                        if args.frames:
                            emit("frame", t=now, rgb=probe_rgb(frame, args.probe), w=frame.width, h=frame.height)
            task = asyncio.ensure_future(receive())
            await asyncio.wait_for(got_frame.wait(), args.timeout)
            emit("connected", answer_ms=None, connect_ms=round((time.monotonic() - start) * 1000, 1), pair=None)
            frames_at_connect = len(arrivals)

            class Channel:  # _drive sends on it as on a data channel
                @staticmethod
                def send(text: str) -> None:
                    asyncio.ensure_future(socket.send_str(text))
            await _drive(Channel, args.seconds)
            task.cancel()
    gaps = [b - a for a, b in zip(arrivals[frames_at_connect:], arrivals[frames_at_connect + 1:])]
    return {"frames": len(arrivals), "longest_gap_ms": round(max(gaps, default=0) * 1000, 1)}


TRANSPORTS = {"webrtc": webrtc, "ws": ws}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("--token")
    p.add_argument("--transport", choices=sorted(TRANSPORTS), default="webrtc")
    p.add_argument("--ice-servers", action="store_true")
    p.add_argument("--relay-only", action="store_true")
    p.add_argument("--only-url", help="use only the ICE servers whose URL contains this")
    p.add_argument("--mdns", action="store_true")
    p.add_argument("--frames", action="store_true")
    p.add_argument("--probe", type=lambda t: tuple(float(v) for v in t.split(",")), default=(0.5, 0.5),
                   help="where --frames reads the colour: X,Y as fractions of the frame (default the centre)")
    p.add_argument("--seconds", type=float, default=3600)
    p.add_argument("--timeout", type=float, default=30)
    args = p.parse_args()
    try:
        summary = asyncio.run(TRANSPORTS[args.transport](args))
    except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as exc:
        emit("error", error=repr(exc))
        return 1
    emit("summary", **summary)
    return 0 if "error" not in summary else 1


if __name__ == "__main__":
    sys.exit(main())
