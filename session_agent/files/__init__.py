"""The user's files: `/files/{path}` on the agent (SPEC "Files in the session's home").

`paths` parses request paths and `headers` the HTTP conditions and ranges (both pure);
`resolve` opens paths beneath the home with openat2 or an O_NOFOLLOW walk; `home` does every
file operation on descriptors from it; `routes` is the aiohttp side, streaming bodies off the loop.
"""
