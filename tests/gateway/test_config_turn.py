"""Configuration (flags and GATEWAY_* variables) and TURN REST credentials."""
from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.identity import turn_user
from gateway.turn import ice_server_links, turn_credentials
from tests.gateway.conftest import bearer


def test_flags_override_environment_which_overrides_defaults():
    env = {"GATEWAY_PORT": "9000", "GATEWAY_DATA_DIR": "/srv/data", "GATEWAY_AUTH": "jwt",
           "GATEWAY_JWT_SECRET": "s", "GATEWAY_APP_GIMP": "gimp-2.10", "GATEWAY_CONTROLLER": "true",
           "GATEWAY_TURN_URLS": "turn:a:3478, stun:b", "GATEWAY_TURN_SECRET": "t"}
    c = load_config(["--port", "9100"], env)
    assert c.port == 9100 and c.data_dir == Path("/srv/data") and c.auth == "jwt"
    assert c.app_commands["gimp"] == "gimp-2.10" and c.controller
    assert c.turn_urls == ("turn:a:3478", "stun:b")
    d = load_config([], {})
    assert d.port == 8080 and d.host == "0.0.0.0" and d.spawner == "local" and d.auth == "token"
    assert len(d.token) >= 24  # generated: printed at start
    assert d.public_url == "http://localhost:8080/"


@pytest.mark.parametrize("argv,env", [
    (["--auth", "jwt"], {}),
    (["--port", "x"], {}),
    ([], {"GATEWAY_PORT": "eighty"}),
    ([], {"GATEWAY_TURN_URLS": "turn:a"}),
    (["--default-timeout", "0"], {}),
    (["--spawner", "docker"], {}),
    ([], {"GATEWAY_APP_GIMP": "gimp 'unbalanced"}),
])
def test_invalid_settings_exit_with_usage(argv, env, capsys):
    with pytest.raises(SystemExit) as exc:
        load_config(argv, env)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_turn_credentials_are_coturn_rest_credentials():
    username, password = turn_credentials("secret", "alice", ttl=600, now=1000)
    assert username == f"1600:{turn_user('alice')}" and "alice" not in username
    expected = base64.b64encode(hmac.new(b"secret", username.encode(), hashlib.sha1).digest()).decode()
    # Ids that differ in case only, or that hold coturn's separator, get their own usernames.
    names = {turn_credentials("s", u, 600, now=1000)[0] for u in ("Alice", "alice", "a:b", "a", "a:b:c")}
    assert len(names) == 5 and all(n.count(":") == 1 for n in names)
    assert password == expected
    links = ice_server_links(("turn:t.example:3478?transport=udp", "stun:s.example"), "secret", "alice", 600)
    assert links[0].startswith('<turn:t.example:3478?transport=udp>; rel="ice-server"; username="')
    assert 'credential-type="password"' in links[0]
    assert links[1] == '<stun:s.example>; rel="ice-server"'


async def test_whep_options_offers_the_ice_servers(gateway):
    client = await gateway(turn_urls=("turn:turn.example:3478",), turn_secret="s3cret")
    sid = (await (await client.post("/api/sessions", json={"application": "gimp"}, headers=bearer())).json())["id"]
    r = await client.options(f"/streaming/{sid}/whep", headers=bearer())
    assert r.status == 204
    (link,) = r.headers.getall("Link")
    assert link.startswith('<turn:turn.example:3478>; rel="ice-server"; username="') and f':{turn_user("local")}"' in link
    # While the session is starting, an offer is answered 503 with Retry-After, not proxied.
    offer = await client.post(f"/streaming/{sid}/whep", data=b"v=0\r\n",
                              headers={**bearer(), "Content-Type": "application/sdp"})
    assert offer.status == 503 and offer.headers["Retry-After"] == "1"
    assert "starting" in (await offer.json())["error"]


def test_session_sizes_from_flags_and_environment(capsys):
    c = load_config([], {"GATEWAY_SESSION_SIZE": "1280x720", "GATEWAY_SESSION_MAX_SIZE": "3840x2160"})
    assert (c.session_size, c.session_max_size) == ("1280x720", "3840x2160")
    assert load_config([], {}).session_max_size is None  # the agents' default: the session size
    for argv, message in [(["--session-max-size", "big"], "invalid --session-max-size 'big'"),
                          (["--session-size", "1920x1080", "--session-max-size", "1280x720"],
                           "exceeds --session-max-size")]:
        with pytest.raises(SystemExit):
            load_config(argv, {})
        assert message in capsys.readouterr().err
