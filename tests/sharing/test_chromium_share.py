"""Sharing in real Chromium through the real gateway and a real agent: the owner makes two
links with the launcher's Share panel, two guests open them in their own browser contexts (one
view-only), X's RECORD extension shows whose input reached the display, the owner's list
follows joins and leaves, revocation ends the guest's page, and the owner takes control."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

from playwright.async_api import async_playwright

from tests.gateway.conftest import LIGHT_APP, REAL_AGENT, TOKEN, bearer, descendants, eventually
from tests.gateway.test_e2e_gimp import CHROMIUM_ARGS
from tests.gateway.test_whep_proxy import running_session
from tests.gateway.xrecord import XRecorder


def agent_flags(session_id: str) -> dict[str, str]:
    """--display and --xauthority of this test's agent process for the session."""
    for pid in descendants(os.getpid()):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if f"SESSION_ID={session_id}".encode() in environ and args[1:3] == ["-m", "session_agent"]:
            return {flag: args[args.index(flag) + 1] for flag in ("--display", "--xauthority") if flag in args}
    raise AssertionError("no agent process for the session")


async def make_link(launcher, role: str) -> str:
    card = launcher.locator('section.app[data-app="gimp"]')
    link = card.locator(".share-link")
    # The panel still shows the previous link until the new one comes: wait for a new value
    # (reading it at once handed the control guest the view link: the flake seen before).
    before = await link.input_value() if await link.is_visible() else ""
    await card.locator(".share-role").select_option(role)
    await card.locator(".share-make").click()
    await link.wait_for(state="visible")
    deadline = asyncio.get_running_loop().time() + 30
    while (value := await link.input_value()) in ("", before):
        assert asyncio.get_running_loop().time() < deadline, "the launcher showed no new link"
        await asyncio.sleep(0.05)
    return value


def presence(page, expression: str):
    return page.wait_for_function(f"(() => {{ const p = window.viewer && window.viewer.presence; return p && ({expression}); }})()",
                                  timeout=60_000)


async def test_owner_and_two_guests_in_three_browser_contexts(gateway, monkeypatch):
    client = await gateway(agent_command=REAL_AGENT, app_commands={"gimp": LIGHT_APP},
                           session_size="640x360", start_timeout=30)
    sid = await running_session(client, bearer())
    flags = agent_flags(sid)
    if "--xauthority" in flags:
        monkeypatch.setenv("XAUTHORITY", flags["--xauthority"])
    recorder = await asyncio.to_thread(XRecorder, flags["--display"])
    base = str(client.make_url("")).rstrip("/")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            owner_ctx, view_ctx, control_ctx = [await browser.new_context(viewport={"width": 900, "height": 600})
                                                for _ in range(3)]
            for context in (owner_ctx, view_ctx, control_ctx):
                context.set_default_timeout(60_000)  # generous: two cores shared with others
            # The owner shares from the launcher: Share on the running session, two links.
            launcher = await owner_ctx.new_page()
            await launcher.goto(f"{base}/?token={TOKEN}")
            share = launcher.locator('section.app[data-app="gimp"] .share-toggle')
            await share.wait_for(state="visible")
            await share.click()
            view_link = await make_link(launcher, "view")
            control_link = await make_link(launcher, "control")
            assert view_link.startswith(f"{base}/streaming/{sid}/?share=") and control_link != view_link
            await launcher.wait_for_function("document.querySelectorAll('.share-item').length === 2")

            owner = await owner_ctx.new_page()
            await owner.goto(f"{base}/streaming/{sid}/?resize=0")
            await presence(owner, "p.role === 'owner' && p.viewers.length === 1")
            watcher = await view_ctx.new_page()
            await watcher.goto(view_link)
            helper = await control_ctx.new_page()
            await helper.goto(control_link)
            logs = {watcher: [], helper: []}
            for page in logs:
                page.on("console", lambda m, page=page: logs[page].append(m.text))
            for page, role in ((watcher, "view"), (helper, "control")):
                await page.wait_for_function("window.viewer && window.viewer.state === 'connected'", timeout=60_000)
                try:
                    await presence(page, f"p.role === '{role}'")
                except Exception as exc:  # say what the page believed
                    seen = await page.evaluate("JSON.stringify({state: window.viewer.state, "
                                               "presence: window.viewer.presence, error: window.viewer.lastError})")
                    raise AssertionError(f"{role} guest: {seen}; console: {logs[page][-20:]}") from exc
                assert await page.locator("#end").is_hidden() and await page.locator("#files-toggle").is_hidden()
            # The owner's list follows the joins.
            await presence(owner, "p.viewers.map(v => v.role).sort().join() === 'control,owner,view'")
            assert await owner.locator(".people-toggle").inner_text() == "People (3)"

            # The view-only guest: the page sends nothing, and what a page ignoring its role
            # sends anyway is refused by the agent; X never sees it.
            await watcher.click("#screen")
            await watcher.keyboard.press("q")
            await watcher.evaluate("""() => {
                window.viewer.sendRaw({type: 'key', code: 'KeyQ', key: 'q', down: true});
                window.viewer.sendRaw({type: 'key', code: 'KeyQ', key: 'q', down: false});
                window.viewer.sendRaw({type: 'button', button: 1, down: true});
                window.viewer.sendRaw({type: 'button', button: 1, down: false});
            }""")
            await watcher.wait_for_function("(window.viewer.lastError || '').includes('view-only')")
            # The control guest types through its page; that reaches X.
            await helper.click("#screen")
            await helper.keyboard.press("z")
            typed = []
            while "z" not in typed:
                press = await asyncio.to_thread(recorder.next_press, "key", 60)
                typed.append(recorder.text_of(press.detail))
            clicks = []
            while not recorder.presses.empty():
                clicks.append(recorder.presses.get_nowait())
            assert "q" not in typed
            # The only button press X saw is the control guest's click (the watcher's never came).
            assert len([c for c in clicks if c.kind == "button"]) <= 1 and typed == ["z"], (typed, clicks)
            # Pointers: the control guest's is drawn on the owner's page, labelled.
            await helper.mouse.move(450, 300)
            await helper.mouse.move(460, 310)
            await presence(owner, "p.pointers.some(x => x.label.includes('control'))")

            # The owner takes control with one click: the guest is view-only until given back.
            await owner.click(".control-toggle")
            await presence(helper, "p.exclusive === true")
            assert "owner has control" in await helper.locator(".badge.role").inner_text()
            await helper.evaluate("window.viewer.sendRaw({type: 'key', code: 'KeyX', key: 'x', down: true})")
            await helper.wait_for_function("(window.viewer.lastError || '').includes('taken control')")
            await owner.click(".control-toggle")
            await presence(helper, "p.exclusive === false")

            # Revoked from the launcher: the guest's page says so (no Reconnecting loop), the
            # owner's list follows the leave.
            await launcher.locator(".share-item").first.locator(".share-revoke").click()
            await watcher.wait_for_function(
                "(window.viewer.overlay || '').includes('revoked or has expired')", timeout=10_000)
            assert await watcher.evaluate("window.viewer.state") == "ended"
            await presence(owner, "p.viewers.map(v => v.role).sort().join() === 'control,owner'")
            await asyncio.sleep(1.5)
            assert await watcher.evaluate("window.viewer.state") == "ended"  # it stays ended
            # Reopening the link: the gateway's page says the same.
            again = await view_ctx.new_page()
            await again.goto(view_link)
            assert "revoked or has expired" in await again.locator("h1").inner_text()
        finally:
            await browser.close()
            await asyncio.to_thread(recorder.close)
