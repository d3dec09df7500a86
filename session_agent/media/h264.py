"""H.264 bitstream facts the agent needs without decoding: NAL units of an Annex-B access unit
and the profile/level an SPS declares (pure; also what a WebCodecs codec string is made of)."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

NAL_SPS = 7
NAL_PPS = 8
NAL_IDR = 5


def nal_units(data: bytes) -> Iterator[bytes]:
    """The NAL units of an Annex-B byte stream (3- or 4-byte start codes), headers included."""
    starts: list[int] = []
    i = data.find(b"\x00\x00\x01")
    while i != -1:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    for n, start in enumerate(starts):
        end = starts[n + 1] - 3 if n + 1 < len(starts) else len(data)
        unit = data[start:end]
        # A 4-byte start code leaves one zero at the end of the previous unit.
        yield unit[:-1] if n + 1 < len(starts) and unit.endswith(b"\x00") else unit


def nal_type(unit: bytes) -> int:
    return unit[0] & 0x1F if unit else -1


@dataclass(frozen=True)
class Profile:
    profile_idc: int
    constraints: int  # constraint_set0..5 flags, as the byte after profile_idc
    level_idc: int

    @property
    def profile_level_id(self) -> str:
        """As SDP's `profile-level-id` and WebCodecs' `avc1.PPCCLL` spell it."""
        return f"{self.profile_idc:02x}{self.constraints:02x}{self.level_idc:02x}"

    @property
    def constrained_baseline(self) -> bool:
        """RFC 6184 / WebRTC: baseline (66) with constraint_set1, or main (77) with set0+set1."""
        set0, set1 = bool(self.constraints & 0x80), bool(self.constraints & 0x40)
        return (self.profile_idc == 66 and set1) or (self.profile_idc == 77 and set0 and set1)


def sps_profile(access_unit: bytes) -> Profile | None:
    """The profile of the first SPS in an access unit, or None when it carries none."""
    for unit in nal_units(access_unit):
        if nal_type(unit) == NAL_SPS and len(unit) >= 4:
            return Profile(unit[1], unit[2], unit[3])
    return None


def sdp_profile(profile_level_id: str) -> Profile:
    """The Profile an SDP `profile-level-id` (6 hex digits) names."""
    value = bytes.fromhex(profile_level_id)
    if len(value) != 3:
        raise ValueError(f"profile-level-id {profile_level_id!r} is not 3 bytes of hex")
    return Profile(value[0], value[1], value[2])
