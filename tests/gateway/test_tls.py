"""Gateway TLS (SPEC "Gateway TLS"): `--tls-cert/--tls-key` serve HTTPS with a certificate made
for this run; unusable files are one clear line; the login cookie is Secure under TLS; TURN URLs
are checked and a configuration that strands some networks is warned about."""
from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.__main__ import network_warnings
from gateway.config import Config, load_config
from gateway.turn import check_ice_url, reachable_over_tcp
from tests.netlab.services import self_signed

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tls-test-token"


def gateway(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", "0",
                             "--token", TOKEN, "--app-gimp", "sleep 3600", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"), ["127.0.0.1"], ["localhost"])


@pytest.fixture(scope="module")
def https(certificate, tmp_path_factory) -> Iterator[str]:
    cert, key = certificate
    proc = gateway("--tls-cert", str(cert), "--tls-key", str(key),
                   "--data-dir", str(tmp_path_factory.mktemp("data")))
    try:
        line = proc.stdout.readline()
        assert line.startswith("Gateway ready: open https://127.0.0.1:"), line + proc.stderr.read()
        yield line.split("open ", 1)[1].split("?", 1)[0].rstrip("/")
    finally:
        proc.terminate()
        proc.wait(30)


def test_https_with_the_given_certificate(https: str, certificate) -> None:
    context = ssl.create_default_context(cafile=str(certificate[0]))
    with urllib.request.urlopen(f"{https}/health", context=context, timeout=10) as r:
        assert r.status == 200
    # Someone who does not trust it is told so by TLS itself: no plain-HTTP fallback.
    with pytest.raises(urllib.error.URLError) as err:
        urllib.request.urlopen(f"{https}/health", timeout=10)
    assert isinstance(err.value.reason, ssl.SSLCertVerificationError)


def test_plain_http_on_the_tls_port_gets_no_page(https: str) -> None:
    host, port = https.removeprefix("https://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", "/health")
        response = connection.getresponse()
        body = response.read()
        assert response.status >= 400 and b'"status"' not in body
    except (http.client.HTTPException, ConnectionError):
        pass  # a TLS server may also just close the connection
    finally:
        connection.close()


def test_the_login_cookie_is_secure_under_tls(https: str, certificate) -> None:
    context = ssl.create_default_context(cafile=str(certificate[0]))
    host, port = https.removeprefix("https://").split(":")
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    try:
        connection.request("GET", f"/?token={TOKEN}")
        response = connection.getresponse()
        response.read()
        cookie = response.getheader("Set-Cookie")
    finally:
        connection.close()
    assert cookie and cookie.startswith("gateway_auth=")
    attributes = [a.strip().lower() for a in cookie.split(";")]
    assert "secure" in attributes and "httponly" in attributes


@pytest.mark.parametrize("what", ["missing", "garbage", "swapped"])
def test_unusable_certificate_files_are_one_line_and_status_1(what: str, certificate, tmp_path: Path) -> None:
    cert, key = certificate
    if what == "missing":
        cert = tmp_path / "nope.pem"
    elif what == "garbage":
        cert = tmp_path / "garbage.pem"
        cert.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    else:
        cert, key = key, cert
    proc = gateway("--tls-cert", str(cert), "--tls-key", str(key), "--data-dir", str(tmp_path / "data"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and out == ""
    lines = [l for l in err.splitlines() if not l.startswith("{")]
    assert len(lines) == 1 and lines[0].startswith("gateway: ") and "Traceback" not in err, err
    assert str(cert) in lines[0]


def test_tls_settings_come_in_pairs_and_from_the_environment(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        load_config(["--tls-cert", "/x.pem"], {})
    assert exc.value.code == 2 and "--tls-cert and --tls-key" in capsys.readouterr().err
    c = load_config([], {"GATEWAY_TLS_CERT": "/etc/c.pem", "GATEWAY_TLS_KEY": "/etc/k.pem", "GATEWAY_PORT": "443"})
    assert (c.tls_cert, c.tls_key) == (Path("/etc/c.pem"), Path("/etc/k.pem"))
    assert c.public_url == "https://localhost:443/"


@pytest.mark.parametrize("url", ["turn:turn.example.com:3478?transport=udp", "turn:turn.example.com:3478?transport=tcp",
                                 "turns:turn.example.com:443?transport=tcp", "turn:203.0.113.5", "stun:[2001:db8::1]:3478",
                                 "turns:turn.example.com"])
def test_turn_urls_that_browsers_take(url: str) -> None:
    check_ice_url(url)


@pytest.mark.parametrize("url", ["turn.example.com:3478", "turn:", "turn:h:70000", "turn:h:3478?transport=sctp",
                                 "stun:h?transport=tcp", "http://turn.example.com", "turn:h:3478,turn:g"])
def test_turn_urls_that_are_not(url: str, capsys) -> None:
    with pytest.raises(ValueError):
        check_ice_url(url)
    if "," not in url:
        with pytest.raises(SystemExit):
            load_config([], {"GATEWAY_TURN_URLS": url, "GATEWAY_TURN_SECRET": "s"})
        assert "--turn-urls" in capsys.readouterr().err


def test_warnings_for_networks_left_out() -> None:
    udp_only = ("turn:t.example:3478?transport=udp",)
    assert reachable_over_tcp(("turns:t.example:443?transport=tcp",))
    assert reachable_over_tcp(("turn:t.example:3478?transport=tcp",)) and not reachable_over_tcp(udp_only)
    warnings = network_warnings(Config(host="0.0.0.0", turn_urls=udp_only, turn_secret="s"))
    assert len(warnings) == 2 and "plain HTTP" in warnings[0] and "blocks UDP" in warnings[1]
    assert network_warnings(Config(host="127.0.0.1")) == []
    assert network_warnings(Config(host="0.0.0.0", tls_cert=Path("c"), tls_key=Path("k"))) == []


def test_the_warnings_are_logged_at_start(tmp_path: Path) -> None:
    proc = gateway("--host", "0.0.0.0", "--data-dir", str(tmp_path / "data"),
                   "--turn-urls", "turn:t.example:3478", "--turn-secret", "s")
    try:
        assert proc.stdout.readline().startswith("Gateway ready")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    warned = [json.loads(l) for l in err.splitlines() if '"network_warning"' in l]
    assert len(warned) == 2 and all(w["level"] == "warning" for w in warned)
