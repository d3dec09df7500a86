// H.264 bitstream facts the WebSocket transport needs (the JS twin of session_agent/media/h264.py):
// the NAL units of an Annex-B access unit, and the WebCodecs codec string its SPS declares.

const NAL_SPS = 7;

// The NAL units (header byte first) of an Annex-B byte stream with 3- or 4-byte start codes.
export function* nalUnits(data) {
  const starts = [];
  for (let i = 0; i + 2 < data.length; i += 1) {
    if (data[i] === 0 && data[i + 1] === 0 && data[i + 2] === 1) {
      starts.push(i + 3);
      i += 2;
    }
  }
  for (let n = 0; n < starts.length; n += 1) {
    let end = n + 1 < starts.length ? starts[n + 1] - 3 : data.length;
    // A 4-byte start code leaves one zero at the end of the previous unit.
    if (n + 1 < starts.length && end > starts[n] && data[end - 1] === 0) end -= 1;
    yield data.subarray(starts[n], end);
  }
}

const hex = (v) => v.toString(16).padStart(2, '0');

// `avc1.PPCCLL` (profile_idc, constraint flags, level_idc) from the access unit's first SPS,
// or null when it carries none (only keyframes do).
export function codecString(accessUnit) {
  for (const unit of nalUnits(accessUnit)) {
    if ((unit[0] & 0x1f) === NAL_SPS && unit.length >= 4) return `avc1.${hex(unit[1])}${hex(unit[2])}${hex(unit[3])}`;
  }
  return null;
}
