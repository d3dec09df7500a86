"""The WebSocket transport's wire, shared by the session agent and the gateway's relay (SPEC
"WebSocket transport"): the binary frame's header (frame.py), the per-socket rule that drops
frames rather than let a slow link fill a buffer (backpressure.py), and the socket option that
keeps the kernel's share of that buffer small (sockets.py).

The standard library only: each program's image carries this package and nothing of the
other program (tests/images/test_dependencies.py).
"""
