"""The HTML report in headless Chromium (issue 5): it loads from disk with the network cut off,
asks for nothing outside its own file, every image renders, the console stays clean, and a
full-page screenshot is not blank. Negative controls prove each check can fail.

Driven with Selenium and the chromedriver that ships with the system Chromium (Debian:
``apt-get install chromium chromium-driver``; ``make test`` installs both as root, through
scripts/setup-system.sh). The tests marked ``browser`` need them (``make test-fast`` leaves them
out); a missing or broken browser fails them with a message saying what to install, it never
skips them. The checks of that message bring their own stand-in browser and driver.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from study_fixture import make_study  # tests/ is on sys.path (pytest rootdir-less import)

from cnnbench.plots import plot_all
from cnnbench.provenance import report_context
from cnnbench.report import build_report

pytestmark = pytest.mark.timeout(300)  # a hung browser fails the test instead of stalling CI

WINDOW = (1280, 900)
INSTALL_HINT = (
    "install Chromium and its driver (Debian/Ubuntu: `apt-get install chromium chromium-driver`, "
    "which `make test` runs as root), or set CNNBENCH_CHROMIUM and CNNBENCH_CHROMEDRIVER to a Chromium/Chrome "
    "binary and the chromedriver of the same version"
)


# --- the report under test: the one place that knows the run layout and the variant table --------


STUDY: dict = {}


def build_report_tree(root: Path) -> Path:
    """A constructed study (every variant x recipe x 2 seeds) -> aggregate -> plots -> report
    under ``root/results``, laid out as the pipeline lays it out."""
    study = make_study(root, seeds=[0, 1])
    plot_all(study.cfg, study.runs, study.summary, study.plots)
    context = report_context(study.cfg, study.prepared, command="snakemake --cores 4 --config profile=smoke")
    html_path, _ = build_report(study.cfg, study.summary, study.plots, study.runs, study.report, context)
    STUDY["cfg"] = study.cfg
    return html_path


def variant_ids() -> list[str]:
    return list(STUDY["cfg"].variants)


def figure_files(plots: Path) -> list[str]:
    return [f["file"] for f in json.loads((plots / "figures.json").read_text())]


# --- the browser and what it saw -------------------------------------------------------------------


def _find_binary(env_var: str, names: tuple[str, ...]) -> tuple[str | None, str]:
    """(path or None, where it was looked for): ``env_var`` when set, else the first of ``names`` on PATH."""
    if os.environ.get(env_var):
        return shutil.which(os.environ[env_var]), f"{env_var}={os.environ[env_var]}"
    return next((path for path in map(shutil.which, names) if path), None), f"{', '.join(names)} on PATH"


def start_chromium() -> webdriver.Chrome:
    """Headless Chromium with every network request failing: DevTools offline emulation, plus a
    dead proxy and a resolver that resolves nothing in case the emulation were ignored."""
    chromium, chromium_where = _find_binary("CNNBENCH_CHROMIUM", ("chromium", "chromium-browser", "google-chrome",
                                                                  "google-chrome-stable"))
    driver_path, driver_where = _find_binary("CNNBENCH_CHROMEDRIVER", ("chromedriver",))
    missing = [f"{what} (looked for {where})" for what, path, where in
               (("Chromium", chromium, chromium_where), ("chromedriver", driver_path, driver_where)) if not path]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: the report's browser test needs both; {INSTALL_HINT}",
                    pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium  # with the driver path given, Selenium Manager never runs
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars", "--force-device-scale-factor=1",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                "--host-resolver-rules=MAP * ~NOTFOUND"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
    except WebDriverException as exc:
        pytest.fail(f"headless Chromium did not start ({chromium} via {driver_path}): {exc.msg}; {INSTALL_HINT}",
                    pytrace=False)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions",
                           {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    return driver


@dataclass
class Page:
    url: str
    title: str
    ready_state: str
    text: str
    images: list[dict]  # src (first 80 characters), complete, naturalWidth, naturalHeight
    requests: list[str]  # every URL the page asked for, as the DevTools network log saw them
    console: list[dict]  # browser log entries: level, source, message
    screenshot: bytes  # full-page PNG


WAIT_FOR_IMAGES = """
const done = arguments[arguments.length - 1];
const pending = Array.from(document.images, img => img.complete ? null
    : new Promise(resolve => { img.addEventListener("load", resolve); img.addEventListener("error", resolve); }));
Promise.all(pending).then(() => done(Array.from(document.images, img => ({
    src: img.getAttribute("src").slice(0, 80), complete: img.complete,
    naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight}))));
"""


def load_page(driver: webdriver.Chrome, path: Path) -> Page:
    """Open ``path`` via file://, wait for every image, and collect what the browser saw."""
    for log in ("browser", "performance"):
        driver.get_log(log)  # drop what earlier pages left behind
    url = path.resolve().as_uri()
    driver.get(url)  # returns after the load event
    images = driver.execute_async_script(WAIT_FOR_IMAGES)
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
        elif message["method"] == "Network.webSocketCreated":
            requests.append(message["params"]["url"])
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    return Page(url=url, title=driver.title, ready_state=driver.execute_script("return document.readyState"),
                text=driver.execute_script("return document.body.innerText"), images=images,
                requests=requests, console=driver.get_log("browser"),
                screenshot=base64.b64decode(shot["data"]))


def page_problems(page: Page) -> list[str]:
    """Everything that breaks "a self-contained page that renders offline", one line each."""
    problems = []
    if page.ready_state != "complete":
        problems.append(f"document.readyState is {page.ready_state!r}, not 'complete'")
    for url in page.requests:
        if url == page.url or url.startswith("data:"):
            continue
        if url.startswith("file:"):
            problems.append(f"reads another file, so the page is not self-contained: {url}")
        else:
            problems.append(f"network request: {url[:120]}")
    for img in page.images:
        if not img["complete"] or img["naturalWidth"] == 0:
            problems.append(f"image did not render (naturalWidth {img['naturalWidth']}): {img['src']}")
    for entry in page.console:
        if entry["level"] == "SEVERE":
            problems.append(f"console error: {entry['message'][:200]}")
    return problems


def screenshot_problems(png: bytes, min_height: int = 2000) -> list[str]:
    """A screenshot of a real report is tall, far from white, and has thousands of colours
    (anti-aliased text and plots); a blank or near-empty page is none of these."""
    with Image.open(io.BytesIO(png)) as im:
        rgb = im.convert("RGB")
    problems = []
    if rgb.height < min_height:
        problems.append(f"screenshot is {rgb.height} px tall, expected at least {min_height}")
    gray = rgb.convert("L")
    ink = sum(gray.histogram()[:240]) / (rgb.width * rgb.height)  # share of pixels clearly not white
    if ink < 0.02:
        problems.append(f"screenshot is blank: {100 * ink:.2f} % non-white pixels, expected at least 2 %")
    colours = len(rgb.getcolors(maxcolors=rgb.width * rgb.height))
    if colours < 500:
        problems.append(f"screenshot has {colours} distinct colours, expected at least 500")
    return problems


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    return build_report_tree(tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def browser():
    driver = start_chromium()
    yield driver
    driver.quit()


# --- the report ----------------------------------------------------------------------------------------


@pytest.mark.browser
def test_report_renders_offline_in_chromium(browser, report_html):
    assert report_html.parts[-3:] == ("results", "report", "report.html")
    page = load_page(browser, report_html)
    assert page_problems(page) == []
    assert page.requests[0] == page.url  # the request log works: it saw the page itself
    assert page.title.startswith("cnnbench report")
    for name in variant_ids():
        assert name in page.text
    assert "smoke data: not evidence" in page.text

    # every figure of figures.json, in order, each drawn at the PNG's own size; then the 64 x 64
    # thumbnails of the duplicate groups that span splits (the fixture's audits: 24 shown of CIFAR-10's
    # 30, 3 of every other data set, two images each)
    plots = report_html.parents[1] / "plots"
    expected = []
    for name in figure_files(plots):
        with Image.open(plots / name) as im:
            expected.append((im.width, im.height))
    sizes = [(img["naturalWidth"], img["naturalHeight"]) for img in page.images]
    assert sizes[:len(expected)] == expected
    assert all(w > 100 and h > 100 for w, h in expected)
    shown = sum(24 if ds == "cifar10" else 3 for ds in STUDY["cfg"].datasets)
    assert sizes[len(expected):] == [(64, 64)] * 2 * shown
    assert "showing 24 of 30 groups that span splits" in page.text

    with Image.open(io.BytesIO(page.screenshot)) as shot:
        assert shot.width == WINDOW[0]
        assert shot.height < 60_000  # the full page (its tuning section included), not an endless one
    assert screenshot_problems(page.screenshot) == []


# --- negative controls: each check fails when it should ------------------------------------------


def _variant_page(report_html: Path, tmp_path: Path, edit) -> Path:
    html = report_html.read_text(encoding="utf-8")
    changed = edit(html)
    assert changed != html, "the edit did not apply: the report's markup changed"
    path = tmp_path / "results" / "report" / "report.html"  # same depth, so ../plots would resolve too
    path.parent.mkdir(parents=True)
    path.write_text(changed, encoding="utf-8")
    plots = tmp_path / "results" / "plots"
    shutil.copytree(report_html.parents[1] / "plots", plots)
    return path


def _first_img_src(html: str, src: str) -> str:
    return re.sub(r'<img src="[^"]*"', f'<img src="{src}"', html, count=1)


def _before(tag: str, snippet: str):
    return lambda html: html.replace(tag, snippet + tag, 1)


NEGATIVE = {
    "corrupt embedded image": (lambda html: _first_img_src(html, "data:image/png;base64,iVBORw0KGgoAAAAA"),
                               ["image did not render (naturalWidth 0): data:image/png;base64,iVBORw0KGgoAAAAA"]),
    "missing image file": (lambda html: _first_img_src(html, "missing.png"),
                           ["image did not render (naturalWidth 0): missing.png",
                            "reads another file, so the page is not self-contained: file://",
                            "console error: file://"]),
    "image beside the page": (lambda html: _first_img_src(html, "../plots/accuracy_cifar10.png"),
                              ["reads another file, so the page is not self-contained: file://"]),
    "external image": (lambda html: _first_img_src(html, "https://example.org/figure.png"),
                       ["network request: https://example.org/figure.png",
                        "image did not render (naturalWidth 0): https://example.org/figure.png",
                        "console error: https://example.org/figure.png"]),
    "external stylesheet": (_before("</head>", '<link rel="stylesheet" href="http://example.org/style.css">'),
                            ["network request: http://example.org/style.css"]),
    "console.error": (_before("</body>", '<script>console.error("report broke")</script>'),
                      ['console error: ', '"report broke"']),
    "uncaught exception": (_before("</body>", "<script>notDefinedAnywhere()</script>"),
                           ["console error: ", "notDefinedAnywhere is not defined"]),
}


@pytest.mark.browser
@pytest.mark.parametrize("case", list(NEGATIVE))
def test_page_checks_catch_a_broken_copy(browser, report_html, tmp_path, case):
    edit, expected = NEGATIVE[case]
    page = load_page(browser, _variant_page(report_html, tmp_path, edit))
    problems = page_problems(page)
    text = "\n".join(problems)
    for needle in expected:
        assert needle in text, f"{case}: {needle!r} not reported; got {problems}"
    if case == "image beside the page":  # it rendered, so only the self-containment check caught it
        assert all(img["naturalWidth"] > 0 for img in page.images)
        assert len(problems) == 1


@pytest.mark.browser
@pytest.mark.parametrize("case, edit, expected", [
    ("hidden content", _before("</head>", "<style>body { visibility: hidden; }</style>"),
     ["screenshot is blank", "distinct colours"]),
    ("empty body", lambda html: re.sub(r"<body>.*</body>", "<body></body>", html, flags=re.S),
     ["px tall", "screenshot is blank", "distinct colours"]),
])
def test_screenshot_check_catches_a_blank_page(browser, report_html, tmp_path, case, edit, expected):
    page = load_page(browser, _variant_page(report_html, tmp_path, edit))
    problems = screenshot_problems(page.screenshot)
    for needle in expected:
        assert any(needle in p for p in problems), f"{case}: {needle!r} not reported; got {problems}"


# --- a missing or broken browser fails, it does not skip ----------------------------------------------
# These checks bring their own stand-ins for the browser and the driver, so they pass the same way
# whether or not Chromium and chromedriver are installed on this machine.


def _executable(path: Path, script: str) -> Path:
    path.write_text(script)
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("missing", ["Chromium", "chromedriver", "both", "nothing on PATH"])
def test_missing_browser_fails_with_what_to_install(monkeypatch, tmp_path, missing):
    present = _executable(tmp_path / "present", "#!/bin/sh\nexit 0\n")
    absent = tmp_path / "no-such-file"
    if missing == "nothing on PATH":  # a fresh machine: neither variable set, neither program installed
        monkeypatch.delenv("CNNBENCH_CHROMIUM", raising=False)
        monkeypatch.delenv("CNNBENCH_CHROMEDRIVER", raising=False)
        monkeypatch.setenv("PATH", str(tmp_path))
        expected = ("Chromium (looked for chromium, chromium-browser, google-chrome, google-chrome-stable on PATH) "
                    "and chromedriver (looked for chromedriver on PATH) not found")
    else:
        chromium = present if missing == "chromedriver" else absent
        driver = present if missing == "Chromium" else absent
        monkeypatch.setenv("CNNBENCH_CHROMIUM", str(chromium))
        monkeypatch.setenv("CNNBENCH_CHROMEDRIVER", str(driver))
        expected = {"Chromium": f"Chromium (looked for CNNBENCH_CHROMIUM={absent}) not found",
                    "chromedriver": f"chromedriver (looked for CNNBENCH_CHROMEDRIVER={absent}) not found",
                    "both": f"Chromium (looked for CNNBENCH_CHROMIUM={absent}) and "
                            f"chromedriver (looked for CNNBENCH_CHROMEDRIVER={absent}) not found"}[missing]
    with pytest.raises(pytest.fail.Exception) as failed:
        start_chromium()
    message = str(failed.value)
    assert expected in message
    assert "apt-get install chromium chromium-driver" in message


# A stand-in chromedriver that does what the real one does with a browser that will not run: it
# serves the WebDriver protocol on --port, starts the binary named in the new-session request and,
# when that exits, refuses the session with chromedriver's error.
FAKE_DRIVER = """\
import http.server, json, subprocess, sys
port = int(next(a for a in sys.argv if a.startswith("--port=")).split("=")[1])

class Driver(http.server.BaseHTTPRequestHandler):
    def reply(self, status, value):
        body = json.dumps({"value": value}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.reply(200, {"ready": True, "message": "fake chromedriver"})
        if self.path == "/shutdown":
            raise SystemExit(0)

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        binary = request["capabilities"]["alwaysMatch"]["goog:chromeOptions"]["binary"]
        proc = subprocess.run([binary, "--headless=new"], capture_output=True, text=True)
        self.reply(500, {"error": "session not created", "stacktrace": "",
                         "message": f"session not created: Chrome failed to start: exited with {proc.returncode}; "
                                    f"{proc.stderr.strip()}"})

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Driver).serve_forever()
"""


@pytest.mark.parametrize("broken", ["browser", "driver"])
def test_browser_that_does_not_start_fails_with_what_to_install(monkeypatch, tmp_path, broken):
    fake = _executable(tmp_path / "chromium", "#!/bin/sh\necho 'not a browser' >&2\nexit 1\n")
    if broken == "browser":  # the driver runs, the browser it starts exits at once
        (tmp_path / "fake_chromedriver.py").write_text(FAKE_DRIVER)
        driver = _executable(tmp_path / "chromedriver",
                             f'#!/bin/sh\nexec "{sys.executable}" "{tmp_path / "fake_chromedriver.py"}" "$@"\n')
    else:  # the driver itself exits at once (a broken or foreign binary)
        driver = _executable(tmp_path / "chromedriver", "#!/bin/sh\necho 'not a driver' >&2\nexit 1\n")
    monkeypatch.setenv("CNNBENCH_CHROMIUM", str(fake))
    monkeypatch.setenv("CNNBENCH_CHROMEDRIVER", str(driver))
    with pytest.raises(pytest.fail.Exception) as failed:
        start_chromium()
    message = str(failed.value)
    assert f"headless Chromium did not start ({fake} via {driver}): " in message
    if broken == "browser":
        assert "Chrome failed to start: exited with 1; not a browser" in message
    else:
        assert "unexpectedly exited. Status code was: 1" in message
    assert "apt-get install chromium chromium-driver" in message
