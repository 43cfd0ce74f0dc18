"""The demo page in a real browser: headless Chromium, driven through the DevTools protocol, opens
the page ``serve`` serves, clicks "Score" with a mouse event, and takes a screenshot; the verdict
must be there and the chart region must not be blank."""
import base64
import io
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from serving_fixture import http_server, lake_config

from serving.app import create_app
from serving.history import TransactionHistory, read_feature_rows, state_frame
from serving.models import RegistryChampions
from serving.service import ScoringService, SparkJudge

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
websocket = pytest.importorskip("websocket", reason="websocket-client drives Chromium (pip install websocket-client)")


class DevTools:
    """A minimal Chrome DevTools protocol client over one page's websocket."""

    def __init__(self, url: str):
        self.ws = websocket.create_connection(url, timeout=30)
        self.next_id = 0

    def __call__(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        return self("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make chromium); cannot screenshot")
def test_the_demo_page_scores_the_sample_on_a_click_and_draws_the_chart(spark, lake, tmp_path):
    config = lake_config(lake)
    rows = state_frame(read_feature_rows(str(lake["root"] / "lake" / "features" / "transactions"), "delta"))
    service = ScoringService(config, RegistryChampions(str(lake["root"] / "lake" / "models"), "transactions"),
                             TransactionHistory(rows, complete_from_us=int(rows["ts"].min())),
                             SparkJudge(config, session=lambda: spark))
    profile = tmp_path / "profile"
    with http_server(create_app(service)) as base:
        browser = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                    "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
                                    f"--user-data-dir={profile}", "--window-size=800,800", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port_file = profile / "DevToolsActivePort"
            deadline = time.time() + 60
            while not (port_file.exists() and port_file.read_text().strip()) and time.time() < deadline:
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as answer:
                page = next(t for t in json.load(answer) if t["type"] == "page")
            tab = DevTools(page["webSocketDebuggerUrl"])
            tab("Page.enable")
            tab("Page.navigate", url=base + "/")
            tab.wait_for("document.readyState === 'complete' && !!document.getElementById('score')")
            sample = json.loads(tab.evaluate("document.getElementById('event').value"))
            assert sample["customer_id"] and sample["amount"] > 0            # the form is prefilled
            box = tab.evaluate("JSON.stringify(document.getElementById('score').getBoundingClientRect())")
            box = json.loads(box)
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            for kind in ("mousePressed", "mouseReleased"):
                tab("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
            tab.wait_for("document.body.getAttribute('data-scored') === '1'")
            verdict = tab.evaluate("document.getElementById('verdict').textContent")
            bars = tab.evaluate("document.querySelectorAll('#chart rect').length")
            chart = json.loads(tab.evaluate("JSON.stringify(document.getElementById('chart').getBoundingClientRect())"))
            png = base64.b64decode(tab("Page.captureScreenshot", format="png")["data"])
        finally:
            browser.terminate()
            browser.wait(timeout=30)
    shot = Path(tmp_path / "demo.png")
    shot.write_bytes(png)
    print(f"demo page screenshot: {shot}; verdict {verdict!r}")
    assert verdict.startswith(("ANOMALY", "normal")) and "risk" in verdict
    assert bars == 3                                                          # risk, rcf, logistic
    from PIL import Image, ImageStat

    with Image.open(io.BytesIO(png)) as image:
        rgb = image.convert("RGB")
        assert len(rgb.getcolors(maxcolors=1 << 24) or ()) > 20                # not a blank page
        region = rgb.crop((int(chart["x"]), int(chart["y"]), int(chart["x"] + chart["width"]),
                           int(chart["y"] + chart["height"])))
        spread = ImageStat.Stat(region).stddev
        assert max(spread) > 20, spread                                      # the bars are drawn
