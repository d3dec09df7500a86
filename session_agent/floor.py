"""The floor: which participant may drive the one X pointer and keyboard now (pure logic).

There is one pointer and one keyboard for everyone, so two `control` participants pressing at
once would make X see a drag nobody made. The rule: while one participant holds any button or
key, everyone else's presses, pointer moves and wheel are refused until all of them are
released (releases always pass: they only let go of what that participant holds). The owner
can make every other participant view-only (`exclusive`), and give control back.

The state machine knows peers by id and roles by name; it does no I/O and reads no clock.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["press", "release", "move", "wheel", "clipboard", "resize", "other"]


@dataclass
class Floor:
    exclusive: bool = False  # only owners may drive
    holder: str | None = None  # the peer that holds a button or a key down

    def refusal(self, peer: str, role: str, kind: Kind, holder_label: str = "someone") -> str | None:
        """None when `peer` (with `role`) may do `kind` now, else why not."""
        if kind == "other":
            return None
        if role == "view":
            return "this viewer is view-only"
        if role != "owner" and self.exclusive:
            return "the owner has taken control: you are view-only for now"
        if kind == "resize" and role != "owner":
            return "only the session's owner resizes the display"
        if kind in ("press", "move", "wheel") and self.holder not in (None, peer):
            return f"{holder_label} is using the mouse or keyboard: wait until they let go"
        return None

    def update(self, peer: str, holding: bool) -> bool:
        """After `peer`'s input acted: it holds something now, or not. True when the holder changed."""
        before = self.holder
        if holding and self.holder is None:
            self.holder = peer
        elif not holding and self.holder == peer:
            self.holder = None
        return self.holder != before

    def leave(self, peer: str) -> bool:
        """`peer` is gone or lost control (what it held was released). True when the holder changed."""
        if self.holder == peer:
            self.holder = None
            return True
        return False

    def set_exclusive(self, exclusive: bool, holder_role: str | None) -> bool:
        """Owner's switch; True when a guest holder must let go (it is released by the caller)."""
        self.exclusive = exclusive
        return exclusive and self.holder is not None and holder_role != "owner"
