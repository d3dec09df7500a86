"""Hypothesis strategies for `input` messages: well-formed ones with wild values, wrong types,
random JSON and random bytes. Sizes stay small so that a thousand messages take seconds."""
from __future__ import annotations

import json

from hypothesis import strategies as st

TYPES = ["pointer", "pointer_rel", "button", "wheel", "key", "clipboard", "resize", "ping"]

scalars = (st.none() | st.booleans() | st.integers(-2**40, 2**40)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
numbers = st.integers(-70000, 70000) | st.floats(-1e6, 1e6) | scalars
keys = st.sampled_from(["KeyA", "Digit1", "ShiftLeft", "ControlRight", "Enter", "Numpad5", "a",
                        "A", "ñ", "€", "漢", "😀", "Dead", "F13", "", "Nonsense"]) | st.text(max_size=40)


@st.composite
def well_typed(draw: st.DrawFn) -> dict:
    kind = draw(st.sampled_from(TYPES))
    fields = {
        "pointer": {"x": numbers, "y": numbers},
        "pointer_rel": {"dx": numbers, "dy": numbers},
        "button": {"button": st.integers(-2, 12) | scalars, "down": st.booleans() | scalars},
        "wheel": {"dx": numbers, "dy": numbers},
        "key": {"code": keys | scalars, "key": keys | scalars, "down": st.booleans() | scalars},
        "clipboard": {"text": st.text(max_size=50) | scalars, "more": st.booleans() | scalars},
        "resize": {"width": numbers, "height": numbers, "scale": st.floats(0, 5) | scalars},
        "ping": {"t": scalars | json_values},
    }[kind]
    msg = {"type": kind}
    for name, values in fields.items():
        if draw(st.integers(0, 9)):  # now and then a field is missing
            msg[name] = draw(values)
    return msg


def _dumps(msg: object) -> str:
    return json.dumps(msg)  # NaN/Infinity become the non-standard tokens browsers never send


raw_messages = (
    well_typed().map(_dumps)
    | json_values.map(_dumps)
    | st.dictionaries(st.sampled_from(["type", "x", "text"]), json_values).map(_dumps)
    | st.text(max_size=30)
    | st.binary(max_size=30)
)
