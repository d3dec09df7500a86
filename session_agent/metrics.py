"""Prometheus metrics of one agent, in a registry of its own (several agents may share a process in tests)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# The per-frame stages of the media path, in order (docs/ARCHITECTURE.md, "Latency"):
#   damage_to_grab  XDamage seen by the watcher → the grab starts (waits for the frame-rate cap)
#   grab            MIT-SHM copy of the screen
#   convert         BGRA → the encoder's pixel format (none for NVENC)
#   encode          the encoder's call
#   to_transport    packet encoded → a peer's track hands it to aiortc (the loop's delay)
#   send            aiortc packetizes, protects (SRTP) and sends the frame's packets
FRAME_STAGES = ("damage_to_grab", "grab", "convert", "encode", "to_transport", "send")
# Milliseconds matter here: 0.5 ms steps at the low end, up to a quarter second.
STAGE_BUCKETS = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.010, 0.012, 0.016,
                 0.020, 0.025, 0.033, 0.050, 0.075, 0.1, 0.25)

# A resume reconnects the capture and opens the encoder: tens of ms to a few hundred.
RESUME_BUCKETS = (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.11, 0.12, 0.13, 0.14,
                  0.15, 0.175, 0.2, 0.25, 0.3, 0.4, 0.5, 1.0)


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames_captured = Counter("agent_frames_captured_total", "Screen captures taken", registry=r)
        self.frames_encoded = Counter("agent_frames_encoded_total", "Frames encoded", ["codec"], registry=r)
        self.keyframes = Counter("agent_keyframes_total", "Keyframes encoded", ["codec"], registry=r)
        self.frames_sent = Counter("agent_frames_sent_total", "Encoded frames handed to peers", registry=r)
        self.frames_dropped = Counter("agent_frames_dropped_total",
                                      "Frames a lagging peer skipped (it resumes at a keyframe)", registry=r)
        self.retransmits_refused = Counter(
            "agent_retransmits_refused_total",
            "NACKed packets not sent again: repeated within 0.1 s or over the retransmission budget", registry=r)
        self.bytes_encoded = Counter("agent_video_bytes_total", "Encoded video bytes", ["codec"], registry=r)
        self.encode_seconds = Histogram(
            "agent_encode_seconds", "Capture, colour conversion and encode time per frame",
            buckets=(0.002, 0.004, 0.006, 0.008, 0.012, 0.016, 0.024, 0.033, 0.05, 0.1, 0.25), registry=r)
        # No viewer, no capture: the first viewer's subscription → its keyframe encoded.
        self.resume_seconds = Histogram(
            "agent_resume_seconds", "First viewer after none: subscription to its keyframe encoded",
            buckets=RESUME_BUCKETS, registry=r)
        frame_stage = Histogram(
            "agent_frame_stage_seconds", "Time of each media stage per frame (see FRAME_STAGES)", ["stage"],
            buckets=STAGE_BUCKETS, registry=r)
        # One child per stage, resolved here: the hot path does no label lookup.
        self.stage = {stage: frame_stage.labels(stage) for stage in FRAME_STAGES}
        self.refinements = Counter("agent_refinements_total",
                                   "Lossless overlays of a still screen sent to the viewers", registry=r)
        self.refinement_bytes = Counter("agent_refinement_bytes_total", "PNG bytes of those overlays",
                                        registry=r)
        self.refine_seconds = Histogram(
            "agent_refine_seconds", "Grab, tile comparison and PNG encoding of one overlay",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0), registry=r)
        self.bitrate_cap = Gauge("agent_bitrate_cap_kbps", "Current encoder bitrate cap", registry=r)
        self.peers = Gauge("agent_peers", "Connected viewers, WebRTC and WebSocket", registry=r)
        self.rtt = Gauge("agent_peer_rtt_seconds", "Round-trip time reported by each peer's RTCP",
                         ["peer"], registry=r)
        self.loss = Gauge("agent_peer_loss_ratio", "Fraction of packets lost in each peer's latest receiver report",
                          ["peer"], registry=r)
        self.whep_requests = Counter("agent_whep_requests_total", "WHEP requests by result",
                                     ["status"], registry=r)
