"""The OpenAPI 3.1 description of the gateway's HTTP API, served at `GET /api/openapi.json`.

Built from the running configuration, so that what it says (the authentication in use, the
largest `timeout`) is what this gateway does; tests/fuzz keeps it true to the routes and to the
responses."""
from __future__ import annotations

from typing import Any

from gateway.auth import COOKIE, SHARE_COOKIE
from gateway.config import Config
from gateway.spawners.base import APPLICATIONS, Phase

_JSON = "application/json"
_HTML = "text/html"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"  # gateway.api._QUANTITY


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, **headers: str) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {_JSON: {"schema": schema}}}
    if headers:
        out["headers"] = {h: {"$ref": f"#/components/headers/{r}"} for h, r in headers.items()}
    return out


def _error(description: str, **headers: str) -> dict[str, Any]:
    return _json(_ref("Error"), description, **headers)


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_HTML: {"schema": {"type": "string"}}}}


_UNAUTHORIZED = _error("missing or invalid credentials", **{"WWW-Authenticate": "WWWAuthenticate"})
_NOT_YOURS = _error("no such session, or not the caller's")
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
       "description": "session id"}
_PEER = {"name": "peer", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "WHEP peer id, from the `Location` of the offer's answer"}
_PAGE_TOKEN = {"name": "token", "in": "query", "required": False, "schema": {"type": "string"},
               "description": "credentials, once: kept as an HttpOnly cookie, then a 303 to the "
                              "URL without it"}
_SHARE_PARAM = {"name": "share", "in": "query", "required": False, "schema": {"type": "string"},
                "description": "a share link's token (viewer page only): its grant is kept as "
                               "HttpOnly cookies scoped to this session, then a 303 to the URL "
                               "without it; a revoked or expired link is a 401 page saying so"}
_SHARE_ID = {"name": "share", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "share id"}
_GUEST_REFUSED = _error("a share link's grant opens this session's viewer only")
_PUBLIC: list[dict[str, list[str]]] = []  # operations anybody may call
# The agent's answers pass through the proxy, so a WHEP error is the agent's or the gateway's.
_ROUTE_ERRORS = {
    "401": _UNAUTHORIZED,
    "404": _NOT_YOURS,
    "409": _error("the session is terminating or failed"),
    "502": _error("the session's agent did not answer or refused the gateway"),
    "503": _error("the session is still starting", **{"Retry-After": "RetryAfter"}),
}


_FILE_PATH = {"name": "path", "in": "path", "required": True, "schema": {"type": "string"},
              "description": "relative to the session's home, `/`-separated, each segment "
                             "percent-encoded (a `%2F` inside a segment is a 400); a trailing "
                             "`/` names a folder"}
_FILE_ERRORS = {
    "400": _error("a path with `..`, NUL, `%2F` in a segment, a leading `/` or a bad encoding"),
    "401": _UNAUTHORIZED,
    "403": _error("the path leads outside the home (a symlink), or names a file with other "
                  "hard links, or a symlink an upload would replace"),
    "404": _error("no such session (or not the caller's: only the owner has its files), or no "
                  "such file or folder"),
    "409": _error("the session is terminating or failed; or a file is where a folder must be, "
                  "or the other way round"),
    "502": _ROUTE_ERRORS["502"],
    "503": _error("the session is still starting, or its agent has no home",
                  **{"Retry-After": "RetryAfter"}),
}
_FILE_HEADERS = {h: {"$ref": f"#/components/headers/{r}"} for h, r in (
    ("ETag", "ETag"), ("Last-Modified", "LastModified"), ("Accept-Ranges", "AcceptRanges"),
    ("Content-Disposition", "ContentDisposition"))}


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"},
            "description": description}


def _files(home: bool) -> dict[str, Any]:
    """`/api/sessions/{id}/files/` (the home) and `…/files/{path}` (SPEC "Files in the session's home")."""
    listing = _json(_ref("Listing"), "a folder's entries")
    item: dict[str, Any] = {"parameters": [_ID] if home else [_ID, _FILE_PATH]}
    if home:
        item["get"] = {"summary": "list the home", "responses": {"200": listing, **_FILE_ERRORS}}
        item["put"] = {"summary": "the home exists: 200", "responses": {
            "200": _json(_ref("Written"), "the home is there"), **_FILE_ERRORS}}
        item["delete"] = {"summary": "refused: the home itself cannot be deleted",
                          "responses": _FILE_ERRORS}
        return item
    item["get"] = {
        "summary": "a file's bytes (streamed), or a folder's listing",
        "parameters": [
            {"name": "download", "in": "query", "required": False, "schema": {"enum": ["1"]},
             "description": "`1`: with `Content-Disposition: attachment`"},
            _header("Range", "one `bytes=` range: 206"),
            _header("If-Range", "the Range only while the file still has this ETag")],
        "responses": {
            "200": {"description": "the file (`Content-Type` by its extension), or a folder's "
                                   "listing as JSON", "headers": _FILE_HEADERS,
                    "content": {_JSON: {"schema": _ref("Listing")},
                                "*/*": {"schema": {"type": "string", "format": "binary"}}}},
            "206": {"description": "the requested range",
                    "headers": {**_FILE_HEADERS,
                                "Content-Range": {"$ref": "#/components/headers/ContentRange"}},
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
            "416": _error("the range starts past the end",
                          **{"Content-Range": "ContentRange"}),
            **_FILE_ERRORS}}
    item["put"] = {
        "summary": "write a file (streamed; complete or not at all), or make a folder "
                   "(path ending in `/`, empty body)",
        "parameters": [_header("If-Match", "write only over this ETag (`*`: over any file)"),
                       _header("If-None-Match", "`*`: only if nothing is there yet")],
        "requestBody": {"required": False, "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": {
            "200": _json(_ref("Written"), "replaced (or the folder was already there)",
                         ETag="ETag"),
            "201": _json(_ref("Written"), "created, with any missing folders", ETag="ETag"),
            "412": _error("If-Match or If-None-Match does not hold; nothing was written"),
            "413": _error("larger than the agent's --max-upload (a declared Content-Length "
                          "is refused before the body is read)"),
            "507": _error("the disk is full; nothing was kept"),
            **_FILE_ERRORS}}
    item["delete"] = {"summary": "delete a file, a link, or an empty folder", "responses": {
        "204": {"description": "deleted"}, **_FILE_ERRORS}}
    return item


def _clipboard() -> dict[str, Any]:
    """`/streaming/{id}/clipboard` (SPEC "Clipboard beyond text")."""
    no_store = {"Cache-Control": {"$ref": "#/components/headers/NoStore"}}
    return {
        "parameters": [_ID],
        "get": {"summary": "what the session's X clipboard holds: a PNG image or UTF-8 text",
                "responses": {
                    "200": {"description": "the clipboard", "headers": no_store, "content": {
                        "image/png": {"schema": {"type": "string", "format": "binary"}},
                        "text/plain": {"schema": {"type": "string"}}}},
                    "204": {"description": "the clipboard holds nothing that can be handed over",
                            "headers": no_store},
                    **_ROUTE_ERRORS,
                    "503": _error("the session is still starting, or the application holding "
                                  "the clipboard has not handed it over yet",
                                  **{"Retry-After": "RetryAfter"})}},
        "put": {"summary": "set the session's X clipboard (text: CLIPBOARD and PRIMARY; an "
                           "image: CLIPBOARD, offered to applications as image/png)",
                "requestBody": {"required": True, "content": {
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                    "text/plain": {"schema": {"type": "string"}}}},
                "responses": {
                    "200": _json({"type": "object", "required": ["mime", "size"], "properties": {
                        "mime": {"enum": ["image/png", "text/plain"]},
                        "size": {"type": "integer", "minimum": 0}}}, "set"),
                    "400": _error("not a PNG image, or text that is not UTF-8"),
                    "413": _error("over 32 MiB (an image) or 1 MiB (text); a declared "
                                  "Content-Length over it is refused before the body is read"),
                    "415": _error("Content-Type is neither image/png nor text/plain (UTF-8)"),
                    **_ROUTE_ERRORS,
                    "503": _error("the session is still starting, or its display refused the "
                                  "clipboard", **{"Retry-After": "RetryAfter"})}},
    }


def _page(summary: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {"summary": summary, "parameters": [_PAGE_TOKEN], "responses": {
        "200": _html("the page"),
        "303": {"description": "`?token=` accepted: the cookie is set, go to the clean URL",
                "headers": {"Location": {"$ref": "#/components/headers/Location"},
                            "Set-Cookie": {"schema": {"type": "string"}}}},
        "401": _html("not signed in"), **extra}}


def _security(config: Config) -> list[dict[str, list[str]]]:
    if config.auth == "header":
        return [{"forwardedUser": []}]
    return [{config.auth: []}, {"cookie": []}]


def spec(config: Config) -> dict[str, Any]:
    session_status = {"description": "the session", "content": {_JSON: {"schema": _ref("Session")}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "GIMP streaming platform gateway", "version": "1",
                 "description": "Sessions, their progress events, WHEP signalling to each "
                                "session's agent, each session's clipboard and the files in its "
                                "home. Errors "
                                "are JSON `{\"error\": …}`."},
        "security": _security(config),
        "paths": {
            "/": {"get": _page("the launcher page", {})},
            "/health": {"get": {"summary": "liveness and readiness", "security": _PUBLIC,
                                "responses": {"200": _json(_ref("Health"), "serving")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": _PUBLIC, "responses": {
                "200": {"description": "text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/static/{filename}": {"get": {
                "summary": "the web client's files", "security": _PUBLIC,
                "parameters": [{"name": "filename", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the file", "content": {"*/*": {}}},
                              "404": _error("no such file in the web client's folder")}}},
            "/logout": {"get": {
                "summary": "forget the login cookie and go to the launcher", "security": _PUBLIC,
                "responses": {"303": {"description": "the cookie is cleared",
                                      "headers": {"Location": {"$ref": "#/components/headers/Location"},
                                                  "Set-Cookie": {"schema": {"type": "string"}}}}}}},
            "/api/logout": {"post": {
                "summary": "forget the login cookie", "security": _PUBLIC,
                "responses": {"200": _json({"type": "object", "required": ["status"],
                                            "properties": {"status": {"const": "logged out"}}},
                                           "the cookie is cleared")}}},
            "/api/openapi.json": {"get": {
                "summary": "this description", "security": _PUBLIC,
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")}}},
            "/api/applications": {"get": {
                "summary": "what the launcher offers",
                "responses": {"200": _json(_ref("Applications"), "the applications"),
                              "401": _UNAUTHORIZED}}},
            "/api/sessions": {
                "get": {"summary": "the caller's sessions", "responses": {
                    "200": _json({"type": "object", "required": ["sessions"],
                                  "properties": {"sessions": {"type": "array",
                                                              "items": _ref("Session")}}},
                                 "oldest first"),
                    "401": _UNAUTHORIZED}},
                "post": {
                    "summary": "start a session, or find the caller's running one",
                    "requestBody": {"required": True,
                                    "content": {_JSON: {"schema": _ref("CreateSession")}}},
                    "responses": {
                        "200": {**session_status, "description": "the caller's existing session "
                                                                "of that application"},
                        "201": {**session_status, "description": "started (phase pending)"},
                        "400": _error("the body is not a valid request"),
                        "401": _UNAUTHORIZED,
                        "409": _error("the caller is at the per-user limit, or their last "
                                      "session of that application is still ending",
                                      **{"Retry-After": "RetryAfter"}),
                        "413": _error("body too large"),
                        "429": _error("the server is at its limit, or the caller "
                                      "started too many sessions lately",
                                      **{"Retry-After": "RetryAfter"}),
                        "503": _error("sessions cannot be started right now")}}},
            "/api/sessions/{id}": {
                "parameters": [_ID],
                "get": {"summary": "one session", "responses": {
                    "200": session_status, "401": _UNAUTHORIZED, "404": _NOT_YOURS}},
                "delete": {"summary": "end a session (user data is synced first)", "responses": {
                    "202": {**session_status, "description": "ending (phase terminating)"},
                    "401": _UNAUTHORIZED, "404": _NOT_YOURS,
                    "503": _error("the session cannot be ended right now")}}},
            "/api/sessions/{id}/events": {
                "parameters": [_ID],
                "get": {"summary": "progress until the session is running or failed", "responses": {
                    "200": {"description": "Server-sent events: `session` (the session object "
                                           "plus `progress` 0..1) at each change, `deleted` when "
                                           "it goes; `:` keep-alive comments every 15 s",
                            "content": {"text/event-stream": {"schema": {  # one event
                                "type": "object", "required": ["event", "data"],
                                "properties": {"event": {"enum": ["session", "deleted"]},
                                               "data": {"type": "string",
                                                        "contentMediaType": _JSON,
                                                        "contentSchema": _ref("Session")}}}}}},
                    "401": _UNAUTHORIZED, "404": _NOT_YOURS}}},
            "/api/sessions/{id}/shares": {
                "parameters": [_ID],
                "get": {"summary": "the session's live share links (owner only)", "responses": {
                    "200": _json({"type": "object", "required": ["shares"], "properties": {
                        "shares": {"type": "array", "items": _ref("Share")}}}, "oldest first"),
                    "401": _UNAUTHORIZED, "403": _GUEST_REFUSED, "404": _NOT_YOURS}},
                "post": {
                    "summary": "make a share link: `view` watches, `control` also drives",
                    "requestBody": {"required": True,
                                    "content": {_JSON: {"schema": _ref("CreateShare")}}},
                    "responses": {
                        "201": _json(_ref("NewShare"), "the link (its token is shown only now)"),
                        "400": _error("the body is not a valid request"),
                        "401": _UNAUTHORIZED, "403": _GUEST_REFUSED, "404": _NOT_YOURS,
                        "409": _error("the session has as many live links as it may, or is "
                                      "ending or failed"),
                        "413": _error("body too large"),
                        "503": _error("the link cannot be stored right now")}}},
            "/api/sessions/{id}/shares/{share}": {
                "parameters": [_ID, _SHARE_ID],
                "delete": {"summary": "revoke a link: its viewers are disconnected at once",
                           "responses": {
                               "204": {"description": "revoked"},
                               "401": _UNAUTHORIZED, "403": _GUEST_REFUSED,
                               "404": _error("no such session or share"),
                               "503": _error("the link cannot be revoked right now")}}},
            "/api/sessions/{id}/viewers": {
                "parameters": [_ID],
                "get": {"summary": "who is connected now (owner only)", "responses": {
                    "200": _json({"type": "object", "required": ["viewers"], "properties": {
                        "viewers": {"type": "array", "items": _ref("Viewer")}}}, "oldest first"),
                    "401": _UNAUTHORIZED, "403": _GUEST_REFUSED, "404": _NOT_YOURS,
                    "502": _ROUTE_ERRORS["502"]}}},
            "/api/sessions/{id}/files/": _files(home=True),
            "/api/sessions/{id}/files/{path}": _files(home=False),
            "/streaming/{id}": {
                "parameters": [_ID],
                "get": {"summary": "to the viewer page", "responses": {
                    "301": {"description": "to `/streaming/{id}/`",
                            "headers": {"Location": {"$ref": "#/components/headers/Location"}}},
                    "401": _UNAUTHORIZED}}},
            "/streaming/{id}/": {
                "parameters": [_ID],
                "get": {**_page("the viewer page (also for a share link's guest)",
                                {"404": _html("no such session")}),
                        "parameters": [_PAGE_TOKEN, _SHARE_PARAM]}},
            "/streaming/{id}/clipboard": _clipboard(),
            "/streaming/{id}/whep": {
                "parameters": [_ID],
                "options": {"summary": "the ICE servers (TURN credentials) before the offer",
                            "responses": {
                                "204": {"description": "`Link: <…>; rel=\"ice-server\"` headers "
                                                       "when TURN is configured",
                                        "headers": {"Allow": {"$ref": "#/components/headers/Allow"},
                                                    "Link": {"$ref": "#/components/headers/Link"}}},
                                "401": _UNAUTHORIZED, "404": _NOT_YOURS}},
                "post": {
                    "summary": "WHEP: an SDP offer, answered by the session's agent",
                    "requestBody": {"required": True, "content": {
                        "application/sdp": {"schema": {"type": "string"}}}},
                    "responses": {
                        "201": {"description": "the SDP answer",
                                "headers": {h: {"$ref": f"#/components/headers/{h}"}
                                            for h in ("Location", "Link", "ETag")},
                                "content": {"application/sdp": {"schema": {"type": "string"}}}},
                        "400": _error("not a usable offer"),
                        "413": _error("offer too large"),
                        "415": _error("Content-Type is not application/sdp"),
                        **_ROUTE_ERRORS}}},
            "/streaming/{id}/ws": {
                "parameters": [_ID],
                "get": {
                    "summary": "the WebSocket transport (SPEC \"WebSocket transport\"), relayed "
                               "to the session's agent",
                    "description": "Binary messages: a 16-byte header (kind, flags, width, height, "
                                   "capture time) and one H.264 access unit; text messages: the "
                                   "`input` channel's JSON. When the agent refuses or cannot be "
                                   "reached the upgrade completes, an `error` message says why and "
                                   "the socket closes with code 4000 + the HTTP status.",
                    "responses": {
                        "101": {"description": "switching to the WebSocket protocol"},
                        "426": _error("not a WebSocket upgrade"),
                        **_ROUTE_ERRORS}}},
            "/streaming/{id}/whep/{peer}": {
                "parameters": [_ID, _PEER],
                "delete": {"summary": "end the viewer", "responses": {
                    "200": _json({"type": "object"}, "ended"), **_ROUTE_ERRORS}},
                "patch": {
                    "summary": "trickle ICE: not supported",
                    "requestBody": {"required": False, "content": {
                        "application/trickle-ice-sdpfrag": {"schema": {"type": "string"}}}},
                    "responses": {"405": _error("send every candidate in the offer",
                                                Allow="Allow"),
                                  "413": _error("body too large"), **_ROUTE_ERRORS}}},
            "/streaming/{id}/refine/{n}": {
                "parameters": [_ID, {"name": "n", "in": "path", "required": True,
                                     "schema": {"type": "string", "pattern": "^[0-9]{1,11}$"}}],
                "get": {"summary": "the lossless overlay of a still screen named by a `refine` "
                                   "message (docs/PROTOCOL.md)",
                        "responses": {"200": {"description": "PNG, transparent where unchanged",
                                              "content": {"image/png": {"schema": {
                                                  "type": "string", "format": "binary"}}}},
                                      **_ROUTE_ERRORS}}},
        },
        "components": {
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer",
                          "description": "`--auth token`: the gateway's secret token"},
                "jwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                        "description": "`--auth jwt`: HS256, `sub` the user, `exp` required, "
                                       "optional `tier`"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": COOKIE,
                           "description": "set by a page's `?token=` (HttpOnly, SameSite=Strict)"},
                "share": {"type": "apiKey", "in": "cookie", "name": SHARE_COOKIE,
                          "description": "a share link's grant, set by `/streaming/{id}/?share=` "
                                         "(HttpOnly, SameSite=Lax, scoped to that session's "
                                         "viewer and `GET /api/sessions/{id}`)"},
                "forwardedUser": {"type": "apiKey", "in": "header", "name": config.user_header,
                                  "description": "`--auth header`: set by the authenticating "
                                                 "proxy"},
            },
            "headers": {
                "Location": {"schema": {"type": "string"}},
                "Link": {"schema": {"type": "string"}},
                "ETag": {"schema": {"type": "string"}},
                "Allow": {"schema": {"type": "string"}},
                "RetryAfter": {"schema": {"type": "string", "pattern": "^[0-9]+$"}},
                "WWWAuthenticate": {"schema": {"type": "string"}},
                "LastModified": {"schema": {"type": "string"}},
                "AcceptRanges": {"schema": {"const": "bytes"}},
                "ContentRange": {"schema": {"type": "string",
                                            "pattern": "^bytes ([0-9]+-[0-9]+|\\*)/[0-9]+$"}},
                "ContentDisposition": {"schema": {"type": "string", "pattern": "^attachment"}},
                "NoStore": {"schema": {"const": "no-store"}},
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string", "minLength": 1}}},
                "Health": {"type": "object", "required": ["status", "spawner", "sessions"],
                           "properties": {"status": {"const": "ok"}, "spawner": {"type": "string"},
                                          "sessions": {"type": "integer", "minimum": 0}}},
                "Applications": {
                    "type": "object", "required": ["applications"],
                    "properties": {"applications": {"type": "array", "items": {
                        "type": "object", "required": ["name", "available"],
                        "properties": {"name": {"enum": list(APPLICATIONS)},
                                       "available": {"type": "boolean"}}}}}},
                "Session": {
                    "type": "object",
                    "required": ["id", "user", "application", "phase", "streaming_url",
                                 "created_at"],
                    "properties": {
                        "id": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                        "user": {"type": "string"},
                        "application": {"enum": list(APPLICATIONS)},
                        "phase": {"enum": [p.value for p in Phase]},
                        "streaming_url": {"type": "string", "pattern": "^/streaming/[^/]+/$"},
                        "created_at": {"type": "string", "format": "date-time"},
                        "started_at": {"type": "string", "format": "date-time"},
                        "message": {"type": "string"}}},
                "CreateSession": {
                    "type": "object", "required": ["application"], "additionalProperties": False,
                    "properties": {
                        "application": {"enum": list(APPLICATIONS)},
                        "resources": {
                            "description": "each at most the maximum of the caller's tier "
                                           "(--resource-limits); above it: 400 naming the limit",
                            "type": ["object", "null"], "additionalProperties": False,
                            "properties": {
                                "cpu": _ref("Quantity"), "memory": _ref("Quantity"),
                                "gpu": {"description": "whole GPUs", "anyOf": [
                                    {"type": "string", "pattern": "^[0-9]{1,16}$"},
                                    {"type": "integer", "minimum": 0,
                                     "maximum": 10 ** 16 - 1}]}}},
                        "timeout": {"type": ["integer", "null"], "minimum": 1,
                                    "maximum": config.max_timeout,
                                    "description": "idle seconds (no viewer) before the "
                                                   "session ends"}}},
                "CreateShare": {
                    "type": "object", "required": ["role"], "additionalProperties": False,
                    "properties": {"role": {"enum": ["view", "control"]},
                                   "expires_in": {"type": "integer", "minimum": 1,
                                                  "maximum": 604800,
                                                  "description": "seconds; default 86400"}}},
                "NewShare": {
                    "type": "object", "required": ["id", "role", "url", "expires_at"],
                    "properties": {"id": {"type": "string"}, "role": {"enum": ["view", "control"]},
                                   "url": {"type": "string",
                                           "pattern": "^/streaming/[^/]+/\\?share=[A-Za-z0-9_-]+$"},
                                   "expires_at": {"type": "integer",
                                                  "description": "Unix seconds"}}},
                "Share": {
                    "type": "object", "required": ["id", "role", "expires_at"],
                    "properties": {"id": {"type": "string"}, "role": {"enum": ["view", "control"]},
                                   "expires_at": {"type": "integer"},
                                   "created": {"type": "integer"}}},
                "Viewer": {
                    "type": "object", "required": ["peer", "role", "transport", "since"],
                    "properties": {"peer": {"type": "string"},
                                   "role": {"enum": ["owner", "view", "control"]},
                                   "transport": {"enum": ["webrtc", "ws"]},
                                   "since": {"type": "number", "description": "Unix seconds"},
                                   "label": {"type": "string"}, "share": {"type": "string"},
                                   "expires_at": {"type": "integer"}}},
                "Listing": {
                    "type": "object", "required": ["path", "entries"],
                    "properties": {
                        "path": {"type": "string", "description": "\"\" for the home"},
                        "entries": {"type": "array", "items": {
                            "type": "object", "required": ["name", "type", "size", "modified"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "type": {"enum": ["file", "dir", "link"]},
                                "size": {"type": "integer", "minimum": 0,
                                         "description": "0 for folders and links"},
                                "modified": {"type": "string", "format": "date-time"}}}}}},
                "Written": {
                    "type": "object", "required": ["path", "type"],
                    "properties": {"path": {"type": "string"}, "type": {"enum": ["file", "dir"]},
                                   "size": {"type": "integer", "minimum": 0},
                                   "modified": {"type": "string", "format": "date-time"}}},
                "Quantity": {"description": "a Kubernetes quantity: \"2\", \"500m\", \"2Gi\"",
                             "anyOf": [{"type": "string", "maxLength": 16, "pattern": QUANTITY},
                                       {"type": "integer", "minimum": 0,
                                        "maximum": 10 ** 16 - 1}]},
            },
        },
    }
