"""Watch the X screen for changes (XDamage) and size changes (RandR) on a thread of its own.

The capture loop sleeps until this says something changed: an idle screen costs no capture
and no encode. One notification per burst (DamageReportNonEmpty), re-armed by subtracting.
"""
from __future__ import annotations

import logging
import os
import select
import threading
from typing import Callable

from Xlib import display as xdisplay, error as xerror
from Xlib.ext import damage, randr

log = logging.getLogger(__name__)


class ScreenWatcher:
    def __init__(self, display: str, on_damage: Callable[[], None],
                 on_resize: Callable[[int, int], None], on_lost: Callable[[str], None]) -> None:
        self._display_name = display
        self._on_damage = on_damage
        self._on_resize = on_resize
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()  # stop() wakes the thread: no polling timeout
        self._thread: threading.Thread | None = None
        self._conn: xdisplay.Display | None = None

    def start(self) -> tuple[int, int]:
        """Connect (raising on failure) and start watching; returns the current screen size."""
        conn = xdisplay.Display(self._display_name)
        if not conn.has_extension("DAMAGE"):
            conn.close()
            raise RuntimeError(f"display {self._display_name} has no DAMAGE extension")
        conn.damage_query_version()  # the protocol requires it before any other DAMAGE request
        root = conn.screen().root
        self._damage = root.damage_create(damage.DamageReportNonEmpty)
        if conn.has_extension("RANDR"):
            root.xrandr_select_input(randr.RRScreenChangeNotifyMask)
        geometry = root.get_geometry()
        conn.flush()
        self._conn = conn
        self._thread = threading.Thread(target=self._run, name="screen-watcher", daemon=True)
        self._thread.start()
        return geometry.width, geometry.height

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=2)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def _run(self) -> None:
        conn = self._conn
        assert conn is not None
        damage_event = conn.extension_event.DamageNotify
        randr_event = conn.extension_event.ScreenChangeNotify if conn.has_extension("RANDR") else None
        try:
            while not self._stop.is_set():
                # select on the connection and the wake pipe rather than a blocking
                # next_event(), so stop() is prompt; an idle session never wakes this thread.
                if not conn.pending_events():
                    ready, _, _ = select.select([conn.fileno(), self._wake_r], [], [])
                    if self._wake_r in ready:
                        break
                damaged = resized = False
                while conn.pending_events():
                    event = conn.next_event()
                    if event.type == damage_event:
                        damaged = True
                    elif randr_event is not None and event.type == randr_event:
                        resized = True
                if resized:
                    # One resize sends several notifications, some with intermediate sizes:
                    # the root window's geometry is the truth.
                    geometry = conn.screen().root.get_geometry()
                    self._on_resize(geometry.width, geometry.height)
                    damaged = True
                if damaged:
                    # Re-arm before capturing, so drawing that happens during the capture is seen.
                    conn.damage_subtract(self._damage)
                    conn.flush()
                    self._on_damage()
        except (xerror.ConnectionClosedError, OSError, xerror.XError) as exc:
            if not self._stop.is_set():
                self._on_lost(f"display {self._display_name} is gone ({type(exc).__name__})")
