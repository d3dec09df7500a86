"""WHEP peers: one RTCPeerConnection per viewer, all fed by the shared encoder."""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import aioice.ice
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import (RTCP_PSFB_APP, RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket, RtcpRrPacket, RtcpSrPacket,
                       unpack_remb_fci)

from .input.channel import InputChannel, Send
from .media.negotiation import (OfferError, choose_codec, codec_preferences, validate_offer, video_codecs,
                                with_default_directions, without_mdns_candidates)
from .media.pipeline import MediaPipeline
from .media.retransmit import RetransmitBudget
from .media.rtpext import install as install_rtp_extensions, negotiate_playout_delay
from .media.track import EncodedVideoTrack
from .viewers import Identity, Viewer, ViewerRegistry

log = logging.getLogger(__name__)

ChannelFactory = Callable[[Send, str], InputChannel]  # (send, peer id) -> the peer's channel

# A viewer that vanished without a DELETE (tab or browser killed, network gone) sends nothing
# more. A live one sends RTCP receiver reports about every second (RFC 3550 allows 5 s), and
# ICE consent freshness alone would notice the silence only after 30 s, with whatever the
# viewer held (keys, buttons) still pressed and the session counted as watched. A connected
# peer silent this long is ended; a viewer that comes back reconnects.
PEER_SILENCE_S = 10.0
# A viewer being disconnected (revoked, expired) gets its `disconnect` message first; this is
# the time that message has to leave before the connection closes.
DISCONNECT_GRACE_S = 0.25
# A peer whose ICE never completes (its viewer gave up, fell back to the WebSocket, or UDP is
# blocked and nobody sent DELETE) would count toward the limit for ever: it goes this long
# after its answer. Connecting takes a second or two, through TURN too.
PEER_CONNECT_S = 10.0


class PeerLimit(Exception):
    pass


@dataclass
class Peer:
    id: str
    pc: RTCPeerConnection
    track: EncodedVideoTrack
    channels: list[InputChannel] = field(default_factory=list)
    heard: float = field(default_factory=time.monotonic)  # when it last sent RTCP or a message
    created: float = field(default_factory=time.monotonic)
    connected: bool = False  # ICE and DTLS completed once


def restrict_ice_addresses(addresses: tuple[str, ...]) -> None:
    """Gather ICE host candidates on these addresses only (aioice has no setting for it)."""
    if addresses:
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(addresses)


class PeerManager:
    def __init__(self, pipeline: MediaPipeline, metrics, *, max_peers: int, prefer: str,
                 channel_factory: ChannelFactory, viewers: ViewerRegistry | None = None,
                 on_gone: Callable[[str], None] = lambda peer: None) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.max_peers = max_peers
        self.prefer = prefer
        self.channel_factory = channel_factory
        self.viewers = viewers if viewers is not None else ViewerRegistry()
        self.on_gone = on_gone  # after a peer's channels are closed (presence.py)
        self.peers: dict[str, Peer] = {}
        self._pending = 0  # offers being answered count against the limit too
        self._reaper: asyncio.Task[None] | None = None
        # Viewers of the other transports (the WebSocket's): one limit for all of them.
        self.others: Callable[[], int] = lambda: 0

    def count(self) -> int:
        """Viewers of every transport, offers being answered included."""
        return len(self.peers) + self._pending + self.others()

    async def create(self, offer_sdp: str, who: Identity = Identity()) -> tuple[str, str]:
        """Answer an offer from the viewer `who`; returns (peer id, answer SDP). Raises
        OfferError or PeerLimit."""
        validate_offer(offer_sdp)
        codecs = video_codecs(offer_sdp)
        chosen = choose_codec(codecs, self.prefer)
        if self.count() >= self.max_peers:
            raise PeerLimit(f"at most {self.max_peers} viewers")
        self._pending += 1
        started = time.monotonic()
        peer_id = secrets.token_urlsafe(12)
        pc = RTCPeerConnection()
        track: EncodedVideoTrack | None = None
        try:
            track = EncodedVideoTrack(self.pipeline, chosen.name, self.metrics)
            transceiver = pc.addTransceiver(track, direction="sendonly")
            transceiver.setCodecPreferences(codec_preferences(chosen.name))
            install_rtp_extensions(transceiver)
            try:
                await pc.setRemoteDescription(
                    RTCSessionDescription(sdp=with_default_directions(without_mdns_candidates(offer_sdp)), type="offer"))
                # Zero playout delay: the browser shows each frame once complete (media/rtpext.py).
                playout_delay = negotiate_playout_delay(transceiver, offer_sdp)
                answer = await pc.createAnswer()
            except Exception as exc:  # aiortc raises ValueError/OperationError/… for bad SDP
                if isinstance(exc, (AttributeError, TypeError, KeyError, IndexError)):
                    # aiortc tripped over its own half-built state: say what is wrong instead.
                    raise OfferError("offer rejected: its media sections, BUNDLE group and "
                                     "transport attributes do not fit together") from exc
                raise OfferError(f"offer rejected: {exc}") from exc
            peer = Peer(peer_id, pc, track)
            self._hook_rtcp(peer_id, transceiver.sender)
            pc.on("datachannel", lambda channel: self._on_datachannel(peer, channel))
            pc.on("connectionstatechange", lambda: self._on_state(peer))
            await pc.setLocalDescription(answer)
        except BaseException:
            if track is not None:
                track.stop()
            await _close_quietly(pc)
            raise
        finally:
            self._pending -= 1
        self.peers[peer_id] = peer
        self.viewers.add(Viewer(peer_id, who.role, "webrtc", time.time(), who.share, who.label,
                                who.expires_at, close=lambda: self._disconnect(peer_id)))
        self.metrics.peers.set(len(self.peers) + self.others())
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap_silent())
        log.info("peer connected", extra={"action": "peer_created", "peer": peer_id,
                                          "role": who.role, "share": who.share,
                                          "encoder": self.pipeline.encoder_for(chosen.name),
                                          "playout_delay": playout_delay,
                                          "duration_ms": round((time.monotonic() - started) * 1000, 1)})
        return peer_id, pc.localDescription.sdp

    def _hook_rtcp(self, peer_id: str, sender: RTCRtpSender) -> None:
        """Route PLI/FIR, REMB and receiver reports' loss to the shared encoder: aiortc ignores
        them for packets it did not encode."""
        original = sender._handle_rtcp_packet
        pipeline = self.pipeline

        async def handle(packet) -> None:
            if peer_id in self.peers:
                self.peers[peer_id].heard = time.monotonic()
            if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
                for report in packet.reports:
                    if report.ssrc == sender._ssrc:
                        pipeline.report_loss(peer_id, report.fraction_lost, report.highest_sequence)
                        self.metrics.loss.labels(peer_id).set(report.fraction_lost / 256)
            elif isinstance(packet, RtcpPsfbPacket):
                if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                    pipeline.request_keyframe()
                elif packet.fmt == RTCP_PSFB_APP:
                    try:
                        bitrate, _ = unpack_remb_fci(packet.fci)
                        pipeline.report_bandwidth(peer_id, bitrate)
                    except ValueError:
                        pass
            await original(packet)

        sender._handle_rtcp_packet = handle
        # NACKs: retransmissions within a budget (media/retransmit.py), not whatever is asked.
        budget = RetransmitBudget()
        retransmit = sender._retransmit

        async def bounded_retransmit(sequence_number: int) -> None:
            if budget.allow(sequence_number, time.monotonic(), pipeline.bitrate.current_kbps):
                await retransmit(sequence_number)
            else:
                self.metrics.retransmits_refused.inc()

        sender._retransmit = bounded_retransmit

    def _on_datachannel(self, peer: Peer, channel) -> None:
        if channel.label != "input":
            return

        def send(message: dict[str, Any]) -> None:
            if channel.readyState == "open":
                channel.send(_json(message))

        handler = self.channel_factory(send, peer.id)
        peer.channels.append(handler)

        def on_message(message) -> None:
            peer.heard = time.monotonic()
            handler.on_message(message)

        channel.on("message", on_message)
        def on_close() -> None:
            handler.close()
            self.on_gone(peer.id)

        channel.on("close", on_close)

    def _on_state(self, peer: Peer) -> None:
        if peer.pc.connectionState == "connected":
            peer.connected = True
            peer.heard = time.monotonic()  # the silence clock starts once media can flow
        if peer.pc.connectionState in ("failed", "closed") and peer.id in self.peers:
            asyncio.ensure_future(self.delete(peer.id, reason=peer.pc.connectionState))

    async def _reap_silent(self) -> None:
        while self.peers:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for peer in list(self.peers.values()):
                if peer.pc.connectionState == "connected" and now - peer.heard > PEER_SILENCE_S:
                    await self.delete(peer.id, reason="silent")
                elif not peer.connected and now - peer.created > PEER_CONNECT_S:
                    await self.delete(peer.id, reason="never_connected")

    async def delete(self, peer_id: str, reason: str = "deleted") -> bool:
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return False
        self.metrics.peers.set(len(self.peers) + self.others())
        self.pipeline.forget_peer(peer_id)
        for gauge in (self.metrics.rtt, self.metrics.loss):
            try:
                gauge.remove(peer_id)
            except KeyError:
                pass
        self.viewers.remove(peer_id)
        for handler in peer.channels:
            handler.close()  # release whatever this viewer still held down
        self.on_gone(peer_id)
        peer.track.stop()
        # Logged before the close handshake: from here on the peer is gone for everyone.
        log.info("peer gone", extra={"action": "peer_deleted", "peer": peer_id, "reason": reason})
        await peer.pc.close()
        return True

    async def _disconnect(self, peer_id: str) -> None:
        """The registry ends this viewer (its share was revoked or expired)."""
        await asyncio.sleep(DISCONNECT_GRACE_S)
        await self.delete(peer_id, reason="disconnected")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        await asyncio.gather(*(self.delete(pid, reason="shutdown") for pid in list(self.peers)))

    async def update_stats(self) -> None:
        """Per-peer RTT from RTCP receiver reports, for /metrics."""
        for peer_id, peer in list(self.peers.items()):
            for sender in peer.pc.getSenders():
                try:
                    report = await sender.getStats()
                except Exception:
                    continue
                for stat in report.values():
                    if stat.type == "remote-inbound-rtp" and stat.roundTripTime is not None:
                        self.metrics.rtt.labels(peer_id).set(stat.roundTripTime)


async def _close_quietly(pc: RTCPeerConnection) -> None:
    """Close a connection an offer left half set up. aiortc's close() assumes every transport
    it started to build exists, and raises from one that a rejected offer never finished: that
    must not turn the offer's clear 400 into a 500."""
    try:
        await pc.close()
    except Exception as exc:
        log.debug("closing a rejected peer: %r", exc, extra={"action": "peer_close_failed"})


def _json(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))
