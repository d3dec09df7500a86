"""Fuzz benchmark: what reaches the platform from outside, at least 10,000 cases by default.

    python -m bench.fuzz [--cases 10000] [--seed N]      (or python bench/fuzz.py …)

Targets, each given its share of `--cases`:
- property-based (hypothesis, tests/fuzz/strategies.py and tests/input/strategies.py), in
  process: SDP offer parsing, data-channel message parsing, JWT checking, session-create bodies;
- property-based over HTTP, against real servers on 127.0.0.1: WHEP offers and headers at a
  real agent (own Xvfb), the same through the gateway's proxy to a running session, and
  session-API bodies, query strings, bearer headers and cookies at the gateway;
- coverage-guided (atheris/libFuzzer, each in its own process, seeded with a real offer and
  real messages): SDP offer parsing, data-channel messages, JWT/cookie checking.

atheris targets count runs only (libFuzzer stops at the first crash, which is reported).
A crash is an exception other than the parser's own rejection (or a rejection with no message);
over HTTP, a 5xx, or a 4xx without a JSON `{"error": "…"}` (the HTML pages aside) counts against
`unclear_rejections`. Prints one JSON object; exits 1 when anything counted against it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: the repository root is what `python -m` would put first
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("AGENT_ICE_ADDRESSES", "127.0.0.1")  # agents gather on loopback only

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Tally:
    cases: int = 0
    accepted: int = 0
    rejected: int = 0  # a clear rejection: the parser's error with a message, or a JSON 4xx
    unclear_rejections: int = 0
    server_errors: int = 0
    crashes: int = 0
    first_failure: str | None = None

    def fail(self, kind: str, what: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        self.first_failure = self.first_failure or what[:500]


def drive(strategy: Any, cases: int, seed: int, one: Callable[[Any], None]) -> None:
    """Run `one` on `cases` examples (generation only: a failure is counted, not shrunk)."""
    from hypothesis import HealthCheck, Phase, given, seed as fix_seed, settings

    @fix_seed(seed)
    @settings(max_examples=cases, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(example: Any) -> None:
        one(example)

    run()


def pure(call: Callable[[Any], Any], rejection: type[Exception], tally: Tally) -> Callable[[Any], None]:
    def one(example: Any) -> None:
        tally.cases += 1
        try:
            call(example)
        except rejection as exc:
            if str(exc):
                tally.rejected += 1
            else:
                tally.fail("unclear_rejections", f"{rejection.__name__} without a message: {example!r}")
        except Exception as exc:  # noqa: BLE001 - what the benchmark is here to find
            tally.fail("crashes", f"{type(exc).__name__}: {exc} on {example!r}")
        else:
            tally.accepted += 1
    return one


# ---- in-process targets --------------------------------------------------------------------
def sdp_offers(cases: int, seed: int) -> Tally:
    from session_agent.media.negotiation import OfferError, choose_codec, validate_offer, video_codecs
    from tests.fuzz.strategies import offers

    def parse(body: bytes) -> None:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise OfferError("offer is not UTF-8 text") from None  # the agent's 400, as it does
        validate_offer(text)
        choose_codec(video_codecs(text), "h264")

    tally = Tally()
    drive(offers, cases, seed, pure(parse, OfferError, tally))
    return tally


def input_messages(cases: int, seed: int) -> Tally:
    from session_agent.input.messages import ProtocolError, parse
    from tests.input.strategies import raw_messages

    tally = Tally()
    drive(raw_messages, cases, seed, pure(parse, ProtocolError, tally))
    return tally


def jwts(cases: int, seed: int) -> Tally:
    from gateway.auth import Authenticator
    from gateway.config import Config
    from tests.fuzz.strategies import tokens
    from tests.gateway.conftest import JWT_SECRET

    auth = Authenticator(Config(auth="jwt", jwt_secret=JWT_SECRET))
    tally = Tally()

    def check(token: str) -> None:
        tally.cases += 1
        try:
            user = auth.check(token)
        except Exception as exc:  # noqa: BLE001
            tally.fail("crashes", f"{type(exc).__name__}: {exc} on {token!r}")
            return
        if user is None:
            tally.rejected += 1
        else:
            tally.accepted += 1

    drive(tokens(), cases, seed, check)
    return tally


def create_bodies(cases: int, seed: int) -> Tally:
    from gateway.api import BadRequest, parse_create
    from tests.fuzz.strategies import create_bodies as bodies

    tally = Tally()
    drive(bodies, cases, seed, pure(lambda body: parse_create(body, 7 * 24 * 3600), BadRequest, tally))
    return tally


# ---- over HTTP, real servers on loopback ---------------------------------------------------
def judge(tally: Tally, what: str, status: int, headers: Any, body: bytes, page: bool = False) -> None:
    """Count one HTTP answer: accepted, a clear rejection, or a failure."""
    tally.cases += 1
    if status >= 500:
        tally.fail("server_errors", f"{status} for {what}: {body[:200]!r}")
    elif status < 400:
        tally.accepted += 1
    elif page and headers.get("Content-Type", "").startswith("text/html"):
        tally.rejected += 1
    else:
        try:
            message = json.loads(body)["error"]
            clear = isinstance(message, str) and bool(message)
        except (ValueError, KeyError, TypeError):
            clear = False
        if clear:
            tally.rejected += 1
        else:
            tally.fail("unclear_rejections", f"{status} for {what}: {body[:200]!r}")


def whep(base: str, path: str, token: str, cases: int, seed: int) -> Tally:
    import requests
    from hypothesis import strategies as st

    from tests.fuzz.strategies import authorizations, content_types, extra_headers, header_safe, offers

    http = requests.Session()
    tally = Tally()

    def one(example: tuple[bytes, str | None, str, dict[str, str]]) -> None:
        body, auth, content_type, extra = example
        headers = {**extra, "Content-Type": content_type, **({"Authorization": auth} if auth else {})}
        headers = {k: v for k, v in headers.items() if header_safe(v)}
        r = http.post(base + path, data=body, headers=headers, timeout=60)
        judge(tally, f"POST {path} {body[:80]!r}", r.status_code, r.headers, r.content)
        if r.status_code == 201:  # end the viewer at once: the agent's peer limit stays free
            ended = http.delete(base + r.headers["Location"], timeout=30,
                                headers={"Authorization": f"Bearer {token}"})
            judge(tally, "DELETE the new peer", ended.status_code, ended.headers, ended.content)

    drive(st.tuples(offers, authorizations(token), content_types, extra_headers), cases, seed, one)
    return tally


@dataclass
class Servers:
    agent_url: str
    agent_token: str
    gateway_url: str
    session_id: str


def servers(tmp: Path) -> Iterator[Servers]:
    """A real agent on its own Xvfb, and a live gateway with one running session."""
    import requests

    from tests.agent_process import start_agent
    from tests.fuzz.conftest import live_config, serve
    from tests.gateway.conftest import bearer
    from tests.xserver import start_xvfb

    x = start_xvfb("320x240")
    agent = start_agent(x.display, "--max-peers", "4")
    gateway = serve(live_config(tmp))
    live = next(gateway)
    try:
        status, session = live.request("POST", "/api/sessions", {"application": "gimp"})
        assert status == 201, session
        requests.get(f"{live.url}/api/sessions/{session['id']}/events", headers=bearer(),
                     timeout=120)  # ends once the session runs
        yield Servers(agent.url, agent.token or "", live.url, session["id"])
    finally:
        gateway.close()
        agent.stop()
        x.stop()


def gateway_api(base: str, cases: int, seed: int) -> Tally:
    import requests
    from hypothesis import strategies as st
    from urllib.parse import urlencode

    from gateway.auth import COOKIE
    from tests.fuzz.strategies import cookie_values, header_safe, query_strings, raw_bodies
    from tests.gateway.conftest import TOKEN, bearer

    http = requests.Session()
    tally = Tally()
    requests_ = st.one_of(
        st.tuples(st.just("body"), raw_bodies),
        st.tuples(st.just("query"), query_strings),
        st.tuples(st.just("cookie"), cookie_values),
        st.tuples(st.just("bearer"), cookie_values))

    def one(example: tuple[str, Any]) -> None:
        kind, value = example
        if kind == "body":
            r = http.post(base + "/api/sessions", data=value, timeout=30,
                          headers={**bearer(), "Content-Type": "application/json"})
            judge(tally, f"POST /api/sessions {value[:80]!r}", r.status_code, r.headers, r.content)
        elif kind == "query":
            qs = "?" + urlencode(value)
            for path, headers, page in (("/api/sessions", bearer(), False), ("/", {}, True)):
                r = http.get(base + path + qs, headers=headers, timeout=30, allow_redirects=False)
                judge(tally, f"GET {path}{qs}", r.status_code, r.headers, r.content, page)
        else:
            header = ({"Cookie": f"{COOKIE}={value}"} if kind == "cookie"
                      else {"Authorization": f"Bearer {value}"})
            if not all(header_safe(v) for v in header.values()):
                header = {"Authorization": f"Bearer {TOKEN}x"}
            r = http.get(base + "/api/applications", headers=header, timeout=30)
            judge(tally, f"GET /api/applications {kind}", r.status_code, r.headers, r.content)

    drive(requests_, cases, seed, one)
    return tally


# ---- coverage-guided (atheris), one process per target -------------------------------------
ATHERIS_TARGETS = ("sdp", "input", "jwt")


def atheris_main(target: str, libfuzzer_args: list[str]) -> None:
    """The harness itself (in its own process: libFuzzer exits the process when done)."""
    import atheris

    from tests.fuzz.strategies import OFFER
    # Only the parser under test is instrumented: its coverage is what guides the mutations.
    if target == "sdp":
        with atheris.instrument_imports(include=["session_agent.media.negotiation"]):
            from session_agent.media import negotiation

        def one(data: bytes) -> None:
            try:
                text = data.decode("utf-8")
                negotiation.validate_offer(text)
                negotiation.choose_codec(negotiation.video_codecs(text), "h264")
            except UnicodeDecodeError:
                pass
            except negotiation.OfferError as exc:
                assert str(exc), "a rejection without a reason"
        seeds = [OFFER.encode(), OFFER.replace("\r\n", "\n").encode()]
    elif target == "input":
        with atheris.instrument_imports(include=["session_agent.input.messages"]):
            from session_agent.input import messages

        def one(data: bytes) -> None:
            try:
                messages.parse(data)
            except messages.ProtocolError as exc:
                assert str(exc), "a rejection without a reason"
        seeds = [json.dumps(m).encode() for m in (
            {"type": "pointer", "x": 10, "y": 20}, {"type": "key", "code": "KeyA", "key": "a", "down": True},
            {"type": "wheel", "dx": 0, "dy": 120}, {"type": "clipboard", "text": "hi", "more": False},
            {"type": "resize", "width": 800, "height": 600}, {"type": "ping", "t": 1},
            {"type": "button", "button": 1, "down": False}, {"type": "pointer_rel", "dx": 1, "dy": -1})]
    else:
        import jwt as pyjwt
        with atheris.instrument_imports(include=["gateway.auth", "jwt"]):
            from gateway.auth import Authenticator
            from gateway.config import Config
        from tests.gateway.conftest import JWT_SECRET
        auth = Authenticator(Config(auth="jwt", jwt_secret=JWT_SECRET))

        def one(data: bytes) -> None:
            auth.check(data.decode("utf-8", "replace"))  # None or a User; never an exception
        seeds = [pyjwt.encode({"sub": "alice", "exp": int(time.time()) + 3600, "tier": "premium"},
                              JWT_SECRET, algorithm="HS256").encode()]
    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-"))
    for i, seed_input in enumerate(seeds):
        (corpus / str(i)).write_bytes(seed_input)
    atheris.Setup([sys.argv[0], *libfuzzer_args, str(corpus)], one)
    atheris.Fuzz()


def atheris_run(target: str, cases: int, seed: int) -> Tally:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.fuzz", "--atheris", target, f"-runs={cases}",
         f"-seed={seed + 1}", "-max_len=8192", "-print_final_stats=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    done = re.search(r"Done (\d+) runs", proc.stderr)
    tally = Tally(cases=int(done.group(1)) if done else 0)
    if proc.returncode != 0:
        tally.fail("crashes", proc.stderr.strip()[-500:])
    return tally


# ---- the benchmark -------------------------------------------------------------------------
SHARES = {  # of --cases; the in-process targets are cheap, HTTP ones cost a request each
    "sdp_offers": 0.15, "input_messages": 0.15, "jwts": 0.1, "create_bodies": 0.1,
    "agent_whep": 0.08, "gateway_whep": 0.07, "gateway_api": 0.1,
    "atheris_sdp": 0.09, "atheris_input": 0.08, "atheris_jwt": 0.08,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=10_000, help="total across targets")
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--atheris", choices=ATHERIS_TARGETS, help=argparse.SUPPRESS)  # the harness
    args, rest = p.parse_known_args()
    if args.atheris:
        atheris_main(args.atheris, rest)
        return
    share = {name: max(1, round(args.cases * f)) for name, f in SHARES.items()}
    started = time.monotonic()
    targets: dict[str, Tally] = {
        "sdp_offers": sdp_offers(share["sdp_offers"], args.seed),
        "input_messages": input_messages(share["input_messages"], args.seed),
        "jwts": jwts(share["jwts"], args.seed),
        "create_bodies": create_bodies(share["create_bodies"], args.seed),
    }
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        live = servers(Path(tmp))
        s = next(live)
        try:
            targets["agent_whep"] = whep(s.agent_url, "/whep", s.agent_token, share["agent_whep"], args.seed)
            from tests.gateway.conftest import TOKEN
            targets["gateway_whep"] = whep(s.gateway_url, f"/streaming/{s.session_id}/whep", TOKEN,
                                           share["gateway_whep"], args.seed)
            targets["gateway_api"] = gateway_api(s.gateway_url, share["gateway_api"], args.seed)
        finally:
            live.close()
    for target in ATHERIS_TARGETS:
        targets[f"atheris_{target}"] = atheris_run(target, share[f"atheris_{target}"], args.seed)
    totals = {k: sum(getattr(t, k) for t in targets.values())
              for k in ("cases", "accepted", "rejected", "unclear_rejections", "server_errors", "crashes")}
    print(json.dumps({
        "benchmark": "fuzz", "seed": args.seed, **totals,
        "all_rejections_clear": totals["unclear_rejections"] == 0,
        "seconds": round(time.monotonic() - started, 1),
        "targets": {name: {k: v for k, v in asdict(t).items() if v is not None}
                    for name, t in targets.items()}}))
    if totals["crashes"] or totals["server_errors"] or totals["unclear_rejections"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
