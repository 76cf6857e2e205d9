"""Open an HTML file in real headless Chromium (via Playwright) and say what rendered.

Playwright's Python package brings its own driver; its browser downloads are not used. The
browser is Debian's `chromium` (`/usr/bin/chromium`, or `$LOSSATLAS_CHROMIUM`), which
`.ci/run` installs. Without Playwright or that browser the calling test is skipped, except in
CI (`$CI` set, and not "0" or "false"), where it fails: there the browser is a requirement.

WebGL (plotly's 3D `surface` traces) runs on SwiftShader, Chromium's software GL, forced with
`--use-angle=swiftshader --enable-unsafe-swiftshader` (`--disable-gpu` keeps a real GPU out of
it, so every machine renders alike). WebGL contexts are created with `preserveDrawingBuffer`
so that their pixels can be read back to check that something was drawn.

Usage: `info = open_report(path, "name.png")`; see `open_report` for what `info` holds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("LOSSATLAS_CHROMIUM", "/usr/bin/chromium")
ARGS = (
    "--no-sandbox",  # CI containers run as root, where Chromium's sandbox cannot start
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",  # opt in to WebGL on SwiftShader (the silent fallback is going)
)
ARTIFACTS = Path(os.environ.get("LOSSATLAS_ARTIFACTS") or Path(__file__).parents[1] / "artifacts")

# A plot counts as rendered once plotly has laid it out and it shows traces: SVG marks in a
# subplot (paths or images under `g.plot`, in a `g.trace`, or contour paths) or a WebGL
# canvas with a live context and more than one colour of pixels.
_PROBE = """() => {
  const painted = (c) => {
    const ctx = c.__lossatlasWebGL;  // set by _INIT; asking getContext here could create one
    if (!ctx || ctx.isContextLost() || c.width < 2 || c.height < 2) return false;
    const w = ctx.drawingBufferWidth, h = ctx.drawingBufferHeight;
    const px = new Uint8Array(4 * w * h);
    ctx.readPixels(0, 0, w, h, ctx.RGBA, ctx.UNSIGNED_BYTE, px);
    const first = px.slice(0, 4).join();
    for (let i = 4; i < px.length; i += 4 * 97) {  // a sparse sample is plenty
      if (px.slice(i, i + 4).join() !== first) return true;
    }
    return false;
  };
  const marks = "g.plot path, g.plot image, g.trace path, g.trace image, g.contourlayer path, "
    + "g.heatmaplayer image";
  const plots = [...document.querySelectorAll(".js-plotly-plot")].map((gd) => {
    const svg = [...gd.querySelectorAll(".main-svg")].some((s) =>
      [...s.querySelectorAll(marks)].some((m) =>
        m.tagName === "image" || (m.getAttribute("d") || "").length > 2));
    const canvases = [...gd.querySelectorAll("canvas")];
    const webgl = canvases.filter(painted).length;
    return {id: gd.id, laid_out: !!gd._fullLayout, svg, canvases: canvases.length, webgl};
  });
  return {
    plot_divs: document.querySelectorAll(".plotly-graph-div").length,
    plots: plots,
    plotly: typeof window.Plotly === "object",
  };
}"""

# Ask for preserveDrawingBuffer on every WebGL context, so readPixels sees the last frame, and
# keep the context on its canvas for _PROBE. Count uncaught errors, to stop waiting at the first.
_INIT = """(() => {
  window.__lossatlasErrors = 0;
  const count = () => { window.__lossatlasErrors += 1; };
  window.addEventListener("error", count);
  window.addEventListener("unhandledrejection", count);
  const get = HTMLCanvasElement.prototype.getContext;
  HTMLCanvasElement.prototype.getContext = function (kind, attrs) {
    if (typeof kind === "string" && kind.includes("webgl")) {
      attrs = Object.assign({}, attrs || {}, {preserveDrawingBuffer: true});
    }
    const ctx = get.call(this, kind, attrs);
    if (ctx && typeof kind === "string" && kind.includes("webgl")) this.__lossatlasWebGL = ctx;
    return ctx;
  };
})();"""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (required in CI, CI={os.environ.get('CI')!r})", pytrace=False)
    pytest.skip(f"{reason}; install Debian's chromium (.ci/run does) and the dev extra")


def require_browser() -> None:
    """Skip the calling test without Playwright or Chromium (fail instead when in CI)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the playwright package is not installed")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"no Chromium at {CHROMIUM} (set LOSSATLAS_CHROMIUM to another one)")


def _rendered(plot: dict[str, Any]) -> bool:
    return plot["laid_out"] and (plot["svg"] or plot["webgl"] > 0)


def open_report(
    path: str | Path,
    screenshot_name: str | None = None,
    *,
    offline: bool = True,
    timeout_s: float = 30.0,
    viewport: tuple[int, int] = (1280, 900),
) -> dict[str, Any]:
    """Open a local HTML file in headless Chromium, wait for its plotly figures, report.

    Skips (or in CI fails) the calling test when there is no browser. Waits until every
    `.plotly-graph-div` has rendered (see `_PROBE`), an uncaught error happened or `timeout_s`
    has passed, then probes the page once more and takes a full-page screenshot.

    Args:
        path: the HTML file, opened as a file:// URL.
        screenshot_name: file name of the screenshot under `ARTIFACTS`; default `<stem>.png`.
        offline: abort every request that is not for a file:// or data: URL (all are
            recorded in `requests` either way).
        timeout_s: how long to wait for the figures.
        viewport: browser window size in CSS pixels.

    Returns:
        A dict with `plot_divs` (number of `.plotly-graph-div` elements), `plots` (number of
        `.js-plotly-plot` divs plotly set up), `rendered` (those with drawn traces), `webgl`
        (painted WebGL canvases), `details` (per plot: id, laid_out, svg, canvases, webgl),
        `plotly` (whether `window.Plotly` exists), `console_errors` and `console_warnings`
        (console message texts), `page_errors` (uncaught exceptions), `requests` (every URL
        requested), `blocked` (URLs aborted because `offline`), `timed_out` (the figures did
        not all render in time), `screenshot` (the PNG's path) and `seconds` (wall time).
    """
    require_browser()
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(path)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / (screenshot_name or f"{path.stem}.png")
    start = time.perf_counter()
    console_errors: list[str] = []
    console_warnings: list[str] = []
    page_errors: list[str] = []
    requests: list[str] = []
    blocked: list[str] = []

    def on_console(message) -> None:
        if message.type == "error":
            console_errors.append(message.text)
        elif message.type == "warning":
            console_warnings.append(message.text)

    def route(r) -> None:
        url = r.request.url
        if offline and not url.startswith(("file:", "data:")):
            blocked.append(url)
            r.abort()
        else:
            r.continue_()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=list(ARGS))
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.add_init_script(_INIT)
            page.on("console", on_console)
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.route("**/*", route)
            page.goto(path.as_uri(), wait_until="load", timeout=timeout_s * 1000)
            timed_out = False
            try:
                page.wait_for_function(
                    f"""() => {{
                      const r = ({_PROBE})();
                      return window.__lossatlasErrors > 0 || (
                        r.plots.length === r.plot_divs && r.plots.every(
                          (p) => p.laid_out && (p.svg || p.webgl > 0)));
                    }}""",
                    polling=100,
                    timeout=timeout_s * 1000,
                )
            except PlaywrightError:
                timed_out = True
            probe = page.evaluate(_PROBE)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    details = probe["plots"]
    return {
        "plot_divs": probe["plot_divs"],
        "plots": len(details),
        "rendered": sum(_rendered(d) for d in details),
        "webgl": sum(d["webgl"] for d in details),
        "details": details,
        "plotly": probe["plotly"],
        "console_errors": console_errors,
        "console_warnings": console_warnings,
        "page_errors": page_errors,
        "requests": requests,
        "blocked": blocked,
        "timed_out": timed_out,
        "screenshot": screenshot,
        "seconds": time.perf_counter() - start,
    }
