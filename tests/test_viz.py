"""The live view in a real headless browser: served by solara, opened in Chromium.

Needs the ``[viz]`` extra and Debian's chromium (``apt-get install chromium``); a
missing browser fails the test (CI installs it), it does not skip it.
"""

from __future__ import annotations

import io
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ROUNDS_STEPPED = 3
"""Each step re-renders three figures (about 1.5 s here): a few show the counter moves."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    from peergrid.scenarios.commands.viz import view_command

    assert CHROMIUM.exists(), (f"{CHROMIUM} is missing: the live-view test drives Debian's "
                               "chromium (apt-get install chromium)")
    port = _free_port()
    command, env = view_command("ieee13", "rule", days=1, port=port, host="127.0.0.1")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the view server exited ({proc.returncode}): "
                            f"{proc.stdout.read().decode()[-2000:]}")
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the view server did not answer at {url} within 60 s")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_live_view_draws_the_feeder_and_steps_in_chromium(server, tmp_path):
    from PIL import Image
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.on("requestfailed", lambda r: outside.append(r.url))
            page.on("request", lambda r: None if r.url.startswith((server, "data:", "blob:"))
                    else outside.append(r.url))
            page.goto(server)
            page.get_by_text("Round 0 of 24").wait_for(timeout=60_000)
            step = page.get_by_role("button", name="Step")
            for k in range(1, ROUNDS_STEPPED + 1):
                step.click()
                page.get_by_text(f"Round {k} of 24", exact=True).wait_for(timeout=30_000)
            # SolaraViz's own counter agrees
            page.get_by_text(f"Step: {ROUNDS_STEPPED}").wait_for(timeout=10_000)
            # the three panels are images whose title names the round they show
            figures = page.locator("img")
            page.wait_for_function("document.querySelectorAll('img').length >= 3 && "
                                   "[...document.querySelectorAll('img')].every(i => i.complete "
                                   "&& i.naturalWidth > 300)", timeout=30_000)
            sizes = [figures.nth(i).bounding_box() for i in range(figures.count())]
            png = page.screenshot(full_page=True)
        finally:
            browser.close()
    (tmp_path / "live-view.png").write_bytes(png)  # kept by pytest for a look

    assert outside == []  # everything served locally: the view works offline
    assert sum(1 for s in sizes if s and s["width"] > 300 and s["height"] > 200) >= 3
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    background = np.array([255, 255, 255])
    drawn = np.abs(image - background).sum(axis=2) > 30
    assert drawn.mean() > 0.05, f"only {drawn.mean():.1%} of the page is not white"
    # the feeder (the first panel): grey lines between buses coloured on the voltage
    # scale, warm (above 1.0 pu: the source is at 1.03 pu)
    box = sizes[0]
    feeder = image[int(box["y"]):int(box["y"] + box["height"]),
                   int(box["x"]):int(box["x"] + box["width"])]
    r, g, b = feeder[..., 0], feeder[..., 1], feeder[..., 2]
    lines = (np.abs(r - 140) < 12) & (np.abs(g - 140) < 12) & (np.abs(b - 140) < 12)
    warm = (r > 200) & (r - b > 60)
    assert lines.sum() > 300 and warm.sum() > 300, (lines.sum(), warm.sum())


def test_a_port_in_use_is_one_line_before_anything_starts():
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "peergrid.scenarios.commands.cli", "view",
                              "--host", "127.0.0.1", "--port", str(port)],
                             capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip() == (f"peergrid: view: 127.0.0.1:{port} is not free "
                                  "(Address already in use); choose another --port")
    assert "http://" not in res.stdout
