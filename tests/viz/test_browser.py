"""The report in a real headless browser (Debian's chromium): characters, colours, the unit
selector, tooltips, and not one request leaving the page."""

import os
import re

import pytest

from gatelab.cli import main
from gatelab.lm import checkpoint as ckpt
from gatelab.viz.activations import record

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} absent (make browser installs it)"),
]

COLOURS = "els => els.map(e => getComputedStyle(e).backgroundColor)"


def _rgb(css: str) -> tuple[int, int, int]:
    return tuple(int(v) for v in re.findall(r"\d+", css)[:3])


def test_report_renders_and_stays_offline(run_dir, py_text, tmp_path):
    from playwright.sync_api import sync_playwright

    out = tmp_path / "report.html"
    assert main(["inspect", str(run_dir), "--text", py_text, "--out", str(out)]) == 0
    run, model = ckpt.load_run(run_dir)
    acts = record(model, run.vocab, py_text)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            seen, blocked, errors = [], [], []

            def guard(route):
                url = route.request.url
                seen.append(url)
                if url.startswith(("file:", "data:")):
                    route.continue_()
                else:
                    blocked.append(url)
                    route.abort()

            page.route("**/*", guard)
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(out.as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)

            # every character rendered, in order
            chars = page.eval_on_selector_all("#text span.ch", "els => els.map(e => e.textContent)")
            assert "".join(chars) == py_text

            # choose f, layer 1, unit 3 with the controls; colours follow the values
            page.select_option("#q", "f")
            page.select_option("#layer", "1")
            page.fill("#unit-num", "3")
            c_unit3 = page.eval_on_selector_all("#text span.ch", COLOURS)
            f = acts.values["f"][1, :, 3]  # (T,)
            reds = [_rgb(c)[0] for c in c_unit3]
            order = sorted(range(len(f)), key=lambda t: f[t])
            assert all(reds[a] >= reds[b] for a, b in zip(order, order[1:]))  # larger f, deeper blue
            assert len(set(c_unit3)) > 5

            page.fill("#unit-num", "4")
            c_unit4 = page.eval_on_selector_all("#text span.ch", COLOURS)
            assert c_unit4 != c_unit3
            page.select_option("#q", "c")
            assert page.eval_on_selector_all("#text span.ch", COLOURS) != c_unit4

            # the tooltip shows the exact value
            page.select_option("#q", "f")
            page.hover("#text span.ch >> nth=7")
            tip = page.text_content("#tip")
            shown = float(re.search(r"= (-?[\d.e+-]+)", tip).group(1))
            assert shown == pytest.approx(float(acts.values["f"][1, 7, 4]), rel=1e-6, abs=1e-9)

            # a ranked unit's button selects it
            button = page.locator("button.pick").first
            label = button.text_content()
            button.click()
            assert page.input_value("#unit-num") == re.search(r"unit (\d+)", label).group(1)
            assert page.input_value("#q") == label.split(" ")[0]

            # the heat map is drawn and the curve is an inline image
            assert page.eval_on_selector("#heat", "c => c.width * c.height") == len(py_text) * 12
            assert page.eval_on_selector("#curve", "i => i.complete && i.naturalWidth > 0")
            assert not errors, errors
            assert not blocked, blocked
            assert seen and all(u.startswith(("file:", "data:")) for u in seen)
        finally:
            browser.close()


def test_the_request_guard_catches_a_request(tmp_path):
    """The check above can fail: a page that fetches something is caught."""
    from playwright.sync_api import sync_playwright

    page_file = tmp_path / "leaky.html"
    page_file.write_text('<html><body><img src="http://192.0.2.1/x.png"></body></html>', encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            blocked = []

            def guard(route):
                if route.request.url.startswith(("file:", "data:")):
                    route.continue_()
                else:
                    blocked.append(route.request.url)
                    route.abort()

            page.route("**/*", guard)
            page.goto(page_file.as_uri())
            page.wait_for_load_state("load")
            assert blocked == ["http://192.0.2.1/x.png"]
        finally:
            browser.close()
