"""The live editor (`clipig gui`): security of the server, and the page driven by Chromium through Playwright."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from clipig.gui.server import host_allowed, origin_allowed

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.browser  # (make test-fast leaves them out)

CONFIG = """\
model: random:tiny
epochs: 100000
resolution: 48
output: out/
seed: 1
targets:
  - features:
      - text: a red apple
"""


# --- pure checks ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("host, bound, port, ok", [
    ("127.0.0.1:8765", "127.0.0.1", 8765, True),
    ("localhost:8765", "127.0.0.1", 8765, True),
    ("[::1]:8765", "127.0.0.1", 8765, True),
    ("LOCALHOST", "127.0.0.1", 8765, True),
    ("evil.example:8765", "127.0.0.1", 8765, False),  # DNS rebinding
    ("127.0.0.1.evil.example", "127.0.0.1", 8765, False),
    ("", "127.0.0.1", 8765, False),
    ("192.168.1.5:8765", "0.0.0.0", 8765, True),  # all interfaces: any IP address, never a domain name
    ("evil.example:8765", "0.0.0.0", 8765, False),
    ("mybox:8765", "mybox", 8765, True),
    ("mybox:9999", "mybox", 8765, False),
])
def test_host_allowed(host, bound, port, ok):
    assert host_allowed(host, bound, port) is ok


def test_origin_allowed():
    assert origin_allowed(None, "127.0.0.1:8765")
    assert origin_allowed("http://127.0.0.1:8765", "127.0.0.1:8765")
    assert not origin_allowed("http://evil.example", "127.0.0.1:8765")
    assert not origin_allowed("null", "127.0.0.1:8765")
    assert not origin_allowed("http://127.0.0.1:9999", "127.0.0.1:8765")


# --- a server in a subprocess -----------------------------------------------------------------------------------

class Server:
    def __init__(self, url: str, work: Path, proc: subprocess.Popen):
        self.url, self.work, self.proc = url, work, proc
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.base = f"http://{parts.netloc}"
        self.token = urllib.parse.parse_qs(parts.query)["token"][0]

    def request(self, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("gui")
    (work / "exp.yaml").write_text(CONFIG)
    (work / "other.yaml").write_text("epochs: 7\n")
    log = open(work / "server.log", "w")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "clipig", "gui", "exp.yaml", "--port", "0", "--no-browser",
                             "--threads", "1"], cwd=work, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    url, deadline = None, time.monotonic() + 60
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = re.search(r"http://\S+\?token=\S+", line)
        url = match.group(0) if match else None
    if url is None:
        proc.kill()
        pytest.fail("the server printed no URL: " + (work / "server.log").read_text())
    yield Server(url, work, proc)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


WS_HEADERS = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
              "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def test_refused_without_token(server):
    for path in ("/", "/static/app.js", "/api/state", "/api/image.png", "/?token=wrong"):
        assert server.request("GET", path)[0] == 401, path
    assert server.request("GET", "/ws", WS_HEADERS)[0] == 401
    status, _, _ = server.request("POST", "/api/start", {"Content-Type": "application/json"}, b'{"text": ""}')
    assert status == 401


def test_token_then_cookie(server):
    status, headers, _ = server.request("GET", f"/?token={server.token}")
    assert status == 302 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    status, headers, body = server.request("GET", "/", {"Cookie": cookie})
    assert status == 200 and b"CLIPig" in body and "Content-Security-Policy" in headers
    assert server.request("GET", "/api/state", {"X-CLIPig-Token": server.token})[0] == 200
    assert server.request("GET", "/ws", {**WS_HEADERS, "Cookie": cookie})[0] == 101
    # only the shipped static files, nothing else
    assert server.request("GET", "/static/..%2F__init__.py", {"Cookie": cookie})[0] == 404
    assert server.request("GET", "/static/session.py", {"Cookie": cookie})[0] == 404


def test_foreign_origin_and_host_refused(server):
    auth = {"X-CLIPig-Token": server.token}
    evil = {**auth, "Origin": "http://evil.example"}
    assert server.request("GET", "/ws", {**WS_HEADERS, **evil})[0] == 403
    assert server.request("POST", "/api/stop", {**evil, "Content-Type": "application/json"}, b"{}")[0] == 403
    assert server.request("GET", "/", {**auth, "Host": f"evil.example:{server.port}"})[0] == 403
    good = {**auth, "Origin": server.base, "Content-Type": "application/json"}
    assert server.request("POST", "/api/validate", good, json.dumps({"text": CONFIG}).encode())[0] == 200


def test_config_paths_are_checked(server):
    headers = {"X-CLIPig-Token": server.token, "Content-Type": "application/json"}
    status, _, body = server.request("POST", "/api/config/load", headers, b'{"path": "/etc/passwd"}')
    assert status == 200 and b'"ok": false' in body and b"root:" not in body


# --- the page in Chromium ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    # the page's expectations wait up to 15 s, not Playwright's 5 s: training and the browser share 2 cores
    sync_api.expect.set_options(timeout=15_000)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)  # for wait_for_function
    page = context.new_page()
    yield page
    context.close()


def epoch_of(page) -> int:
    return int(page.locator("#progress-text").get_attribute("data-epoch") or 0)


def wait_status(page, status: str, timeout: float = 30_000) -> None:
    from playwright.sync_api import expect
    expect(page.locator("#status")).to_have_attribute("data-status", status, timeout=timeout)


def test_page_refused_without_token(server, page):
    assert page.goto(server.base + "/").status == 401


def test_train_stop_edit_continue(server, page):
    from playwright.sync_api import expect
    page.goto(server.url)
    assert page.url.rstrip("/") == server.base  # the token left the address bar for a cookie
    wait_status(page, "idle", 10_000)
    editor = page.locator("#editor")
    expect(editor).to_have_value(CONFIG)  # the file from the command line
    editor.fill("")
    editor.press_sequentially("epochs: 100000\n")  # typed, with the editor's auto-indent
    editor.fill(CONFIG)
    expect(page.locator("#problems")).to_have_class("ok")

    # Alt-S trains: the image changes and the statistics fill within seconds
    page.keyboard.press("Alt+s")
    wait_status(page, "running")
    page.wait_for_function("Number(document.getElementById('image').dataset.frames) >= 3", timeout=20_000)
    expect(page.locator("#table")).to_contain_text("a red apple", timeout=10_000)
    page.wait_for_function("Number(document.getElementById('progress-text').dataset.epoch) >= 5",
                           timeout=20_000)
    expect(page.locator("#progress-text")).to_contain_text("epochs/s")
    expect(page.locator("#snapshots .snap")).not_to_have_count(0)
    first = page.request.get(f"{server.base}/api/snapshot/1.png").body()
    assert page.request.get(f"{server.base}/api/image.png").body() != first

    # Alt-X stops
    page.keyboard.press("Alt+x")
    wait_status(page, "stopped")
    stopped_at = epoch_of(page)
    assert stopped_at >= 5
    assert (server.work / "exp.yaml").read_text() == CONFIG  # nothing saved unasked

    # edit, then continue: the epoch goes on from where it stopped
    page.evaluate("""() => { window.epochs = []; const t = document.getElementById('progress-text');
        new MutationObserver(() => window.epochs.push(Number(t.dataset.epoch)))
            .observe(t, {attributes: true}); }""")
    editor.fill(CONFIG.replace("a red apple", "a green pear"))
    page.keyboard.press("Alt+s")
    wait_status(page, "running")
    expect(page.locator("#table")).to_contain_text("a green pear", timeout=10_000)
    page.wait_for_function(f"Number(document.getElementById('progress-text').dataset.epoch) > {stopped_at + 3}",
                           timeout=20_000)
    assert min(page.evaluate("window.epochs")) >= stopped_at

    # a reopened page shows the current state; closing it does not stop training
    second = page.context.new_page()
    second.goto(server.base + "/")
    wait_status(second, "running", 10_000)
    second.wait_for_function("Number(document.getElementById('image').dataset.frames) >= 1", timeout=10_000)
    assert epoch_of(second) > stopped_at
    expect(second.locator("#editor")).to_have_value(CONFIG.replace("a red apple", "a green pear"))
    second.close()
    before = epoch_of(page)
    page.wait_for_function(f"Number(document.getElementById('progress-text').dataset.epoch) > {before}",
                           timeout=10_000)
    page.keyboard.press("Alt+x")
    wait_status(page, "stopped")

    # invalid YAML: the error shows at its line, while typing
    editor.fill("epochs: 10\nresolution: 64\n  model: x\n")
    expect(page.locator("#gutter-inner .err")).to_have_text("3")
    expect(page.locator("#highlight .l.err .errmsg")).to_contain_text("invalid YAML")
    expect(page.locator("#problems")).to_contain_text("line 3")
    # a wrong parameter: the same message as the CLI
    editor.fill("epochs: 10\nresolution: 64\ntargets:\n  - features:\n      - txt: a cat\n")
    expect(page.locator("#gutter-inner .err")).to_have_text("5")
    expect(page.locator("#highlight .l.err .errmsg")).to_contain_text("unknown parameter 'txt'")
    editor.fill(CONFIG)
    expect(page.locator("#problems")).to_have_class("ok")

    # save the image like the CLI (out/exp.png, out/exp.yaml), then save and load configs
    page.click("#save-image")
    expect(page.locator("#toast")).to_contain_text("out/exp.png")
    assert (server.work / "out" / "exp.png").stat().st_size > 0
    assert "a green pear" in (server.work / "out" / "exp.yaml").read_text()
    page.click("#save-image")
    expect(page.locator("#toast")).to_contain_text("out/exp-1.png")  # never overwrites

    editor.fill(CONFIG + "# edited\n")
    expect(page).to_have_title("\u2022 CLIPig live editor")  # unsaved edits are marked
    page.keyboard.press("Control+s")
    # wait for the page to take the answer in (the dirty mark goes), not just for the file on disk:
    # loading another file before that would ask to discard the edits
    expect(page).to_have_title("CLIPig live editor")
    expect(page.locator("#toast")).to_contain_text("saved exp.yaml")
    assert (server.work / "exp.yaml").read_text() == CONFIG + "# edited\n"
    page.fill("#path", "other.yaml")
    page.click("#load-config")
    expect(editor).to_have_value("epochs: 7\n")

    # reset starts from scratch, at epoch 0
    before = epoch_of(page)
    page.evaluate("window.epochs = []")
    editor.fill(CONFIG)
    page.click("#reset")
    wait_status(page, "running")
    page.wait_for_function("window.epochs.length > 0")
    assert min(page.evaluate("window.epochs")) < before
    page.keyboard.press("Alt+x")
    wait_status(page, "stopped")


def test_a_fourier_decorrelated_run_trains_continues_and_resets(server, page):
    from playwright.sync_api import expect
    config = CONFIG + "parameterization: {type: fft, decorrelate: true}\n"
    page.goto(server.url)
    page.wait_for_function("app.loaded")  # the server's draft arrives once: text filled before it is lost
    editor = page.locator("#editor")
    editor.fill(config)
    expect(page.locator("#problems")).to_have_class("ok")
    page.click("#reset")  # from `init`, whatever ran before
    wait_status(page, "running")
    page.wait_for_function("Number(document.getElementById('image').dataset.frames) >= 3", timeout=20_000)
    page.wait_for_function("Number(document.getElementById('progress-text').dataset.epoch) >= 5", timeout=20_000)
    page.keyboard.press("Alt+x")
    wait_status(page, "stopped")
    stopped_at = epoch_of(page)
    stopped = page.request.get(f"{server.base}/api/image.png").body()

    # continue: from the stopped epoch and picture
    page.evaluate("""() => { window.epochs = []; const t = document.getElementById('progress-text');
        new MutationObserver(() => window.epochs.push(Number(t.dataset.epoch)))
            .observe(t, {attributes: true}); }""")
    page.keyboard.press("Alt+s")
    wait_status(page, "running")
    page.wait_for_function(f"Number(document.getElementById('progress-text').dataset.epoch) > {stopped_at + 2}",
                           timeout=20_000)
    assert min(page.evaluate("window.epochs")) >= stopped_at
    page.keyboard.press("Alt+x")
    wait_status(page, "stopped")
    assert page.request.get(f"{server.base}/api/image.png").body() != stopped
    page.click("#save-image")  # the toast names the files this save wrote (not another test's, nor an old toast)
    expect(page.locator("#toast")).to_contain_text(".yaml", timeout=30_000)
    sidecar = server.work / re.search(r"and (\S+\.yaml)", page.locator("#toast").text_content()).group(1)
    assert "parameterization: {type: fft, decay: 1.0, decorrelate: true, squash: clamp}" in sidecar.read_text()

    # reset: from epoch 0 again
    page.evaluate("window.epochs = []")
    page.click("#reset")
    wait_status(page, "running")
    page.wait_for_function("window.epochs.length > 0")
    assert min(page.evaluate("window.epochs")) < stopped_at
    page.keyboard.press("Alt+x")
    wait_status(page, "stopped")


def test_an_ensemble_trains_and_shows_each_models_similarity(server, page):
    from playwright.sync_api import expect
    page.goto(server.url)
    page.wait_for_function("app.loaded")  # the server's draft arrives once: text filled before it is lost
    editor = page.locator("#editor")
    editor.fill(CONFIG.replace("model: random:tiny", "model: [random:tiny, {name: random:tiny:1, weight: 2}]")
                + "parameterization: {type: fft, decorrelate: true}\n")
    expect(page.locator("#problems")).to_have_class("ok")
    page.click("#reset")
    wait_status(page, "running")
    page.wait_for_function("Number(document.getElementById('progress-text').dataset.epoch) >= 3", timeout=30_000)
    expect(page.locator("#table")).to_contain_text("random:tiny:1", timeout=10_000)  # a row per model
    page.keyboard.press("Alt+x")
    wait_status(page, "stopped")
    editor.fill(CONFIG.replace("  - features:", "  - model: RN50\n    features:"))  # not one of the run's models
    expect(page.locator("#problems")).to_contain_text("'RN50' is not one of the run's models")


def test_png_provenance_load_drop_and_snapshot_video(server, page, tmp_path):
    """The saved image records its config; Load and dropping it on the page open that config; the snapshots
    download as a video."""
    import base64
    import io

    import av
    from playwright.sync_api import expect
    page.on("dialog", lambda dialog: dialog.accept())  # "Discard the unsaved edits?"
    page.goto(server.url)
    wait_status(page, "stopped", 10_000)  # as the tests before left it, with snapshots
    page.locator("#editor").fill(CONFIG)
    page.click("#save-image")
    expect(page.locator("#toast")).to_contain_text("saved out/")
    image = max((server.work / "out").glob("*.png"), key=lambda p: p.stat().st_mtime_ns)
    from PIL import Image
    recorded = Image.open(image).text["clipig:config"]
    assert "a red apple" in recorded and "seed: 1" in recorded

    page.locator("#editor").fill("epochs: 3\n")
    page.fill("#path", str(image))
    page.click("#load-config")
    expect(page.locator("#editor")).to_have_value(recorded)
    expect(page.locator("#toast")).to_contain_text(f"loaded the config of {image}")
    expect(page.locator("#problems")).to_have_class("ok")

    page.locator("#editor").fill("epochs: 3\n")
    page.evaluate("""([data, name]) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, {type: "image/png"}));
        document.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true}));
    }""", [base64.b64encode(image.read_bytes()).decode(), "dropped.png"])
    expect(page.locator("#editor")).to_have_value(recorded)
    expect(page.locator("#toast")).to_contain_text("loaded the config of dropped.png")

    response = page.request.get(f"{server.base}/api/snapshots.mp4")
    assert response.status == 200 and response.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(response.body())) as video:
        assert sum(1 for _ in video.decode(video=0)) >= 2
    assert page.locator("#video").get_attribute("href") == "/api/snapshots.mp4"
