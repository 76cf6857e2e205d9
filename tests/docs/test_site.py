"""The documentation site: `mkdocs build --strict` succeeds (running every tutorial page and the
gallery through docs/hooks.py), its pages render in headless Chromium with every image loaded
and nothing fetched from the network, and the machinery that runs the pages behaves.

The site is built once per module, into a temporary folder, from the repository root.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib.util
import os
import re
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import ARGS, ARTIFACTS, CHROMIUM, require_browser

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
TUTORIALS = DOCS / "tutorials"


def _module(name: str, path: Path):
    """Import a docs/ file as a module of its own (docs/ is not a package)."""
    if str(DOCS) not in sys.path:
        sys.path.insert(0, str(DOCS))  # hooks.py imports tutorial_runner by name
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


runner = _module("tutorial_runner", DOCS / "tutorial_runner.py")


# -- the build ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """`mkdocs build --strict` into a temporary folder; the built site."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "LOSSATLAS_QUIET": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.perf_counter() - start
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"mkdocs build --strict failed after {seconds:.0f} s:\n{log}"
    (out / "build.log").write_text(f"{seconds:.1f} s\n{log}")
    return out


def built(site: Path, page: str) -> Path:
    """The HTML file of a page of docs/ (`use_directory_urls: false`)."""
    return site / Path(page).with_suffix(".html")


def local_images(html: Path) -> list[str]:
    return [s for s in re.findall(r'<img[^>]*\ssrc="([^"]+)"', html.read_text()) if "://" not in s]


def test_the_strict_build_makes_every_page_and_picture(site) -> None:
    assert (site / "index.html").is_file()
    for page in sorted(TUTORIALS.glob("*.md")):
        html = built(site, f"tutorials/{page.name}")
        assert html.is_file(), page.name
        for image in runner.images(page):  # written by the page's own code during the build
            assert (TUTORIALS / image).is_file(), f"{page.name} shows {image} but did not write it"
    for name in ("core", "landscape", "curvature", "plot", "integrations"):
        assert built(site, f"api/{name}.md").is_file()
    gallery = runner.images(DOCS / "gallery.md")
    assert len(gallery) >= 14
    for image in gallery:
        assert (site / image).is_file(), image
    # every <img> of every page points at a file of the site
    missing = [
        f"{html.relative_to(site)}: {src}"
        for html in site.rglob("*.html")
        for src in local_images(html)
        if not (html.parent / src).resolve().is_file()
    ]
    assert not missing, missing
    # the API pages carry the docstrings (mkdocstrings ran), the benchmarks page its include
    assert 'id="lossatlas.core.Problem"' in built(site, "api/core.md").read_text()
    assert "LossatlasCallback" in built(site, "api/integrations.md").read_text()
    assert "surface.py" in built(site, "benchmarks.md").read_text()


def test_every_figure_function_is_in_the_gallery() -> None:
    import lossatlas

    text = (DOCS / "gallery.md").read_text()
    drawn = set(re.findall(r"plot\.(plot_\w+|animate)\(", text))
    wanted = {n for n in lossatlas.plot.__all__ if n.startswith("plot_")} | {"animate"}
    assert wanted <= drawn, sorted(wanted - drawn)


def test_the_nav_lists_every_tutorial_in_order() -> None:
    nav = re.findall(r"^\s*- (tutorials/[\w-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert nav == sorted(nav)
    assert set(nav) >= {f"tutorials/{p.name}" for p in TUTORIALS.glob("*.md")}


# -- the pages in a browser -----------------------------------------------------------------------
_IMAGES = """() => [...document.images].map((i) => ({
  src: i.getAttribute("src"), complete: i.complete, width: i.naturalWidth,
}))"""


@contextlib.contextmanager
def served(folder: Path) -> Iterator[str]:
    """`folder` served over http on 127.0.0.1 (as `python -m http.server` would): its URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()
            thread.join()


def open_static(pages: dict[str, str], timeout_s: float = 30.0) -> dict[str, dict[str, Any]]:
    """Open pages (URLs, by name) in one headless Chromium, offline: a request for anything but
    the pages' own server (or a data: URL) is aborted and recorded. Scroll each page to the
    bottom so every image is requested, wait until all are complete, and report per name:
    `images` (src, complete, natural width), `console_errors`, `page_errors`, `blocked` and
    `screenshot` (a full-page PNG, `docs-<name>.png` under the test artifacts)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    found: dict[str, dict[str, Any]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=list(ARGS))
        try:
            for name, url in pages.items():
                own = url.split("/")[0] + "//" + url.split("/")[2] + "/"
                info: dict[str, Any] = {"console_errors": [], "page_errors": [], "blocked": []}
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                errors = info["console_errors"]
                page.on("console", lambda m, e=errors: m.type == "error" and e.append(m.text))
                page.on("pageerror", lambda e, info=info: info["page_errors"].append(str(e)))

                def route(r, request, blocked=info["blocked"], own=own) -> None:
                    if request.url.startswith((own, "data:")):
                        r.continue_()
                    else:
                        blocked.append(request.url)
                        r.abort()

                page.route("**/*", route)
                page.goto(url, wait_until="load", timeout=timeout_s * 1000)
                page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")
                page.wait_for_function(
                    "() => [...document.images].every((i) => i.complete)",
                    timeout=timeout_s * 1000,
                )
                info["images"] = page.evaluate(_IMAGES)
                info["screenshot"] = ARTIFACTS / f"docs-{name}.png"
                page.evaluate("() => window.scrollTo(0, 0)")
                page.screenshot(path=str(info["screenshot"]), full_page=True)
                page.close()
                found[name] = info
        finally:
            browser.close()
    return found


def test_pages_render_in_chromium_with_their_images(site) -> None:
    require_browser()  # before anything else: skip (or fail in CI) early
    tutorial = sorted(TUTORIALS.glob("*.md"))[0].stem
    pages = {
        "home": "index.md",
        "tutorial": f"tutorials/{tutorial}.md",
        "api": "api/core.md",
        "gallery": "gallery.md",
    }
    with served(site) as url:
        urls = {k: url + built(Path(), p).as_posix() for k, p in pages.items()}
        found = open_static(urls)
    for kind, info in found.items():
        assert not info["page_errors"], (kind, info["page_errors"])
        assert not info["console_errors"], (kind, info["console_errors"])
        assert not info["blocked"], (kind, "fetched from the network", info["blocked"])
        broken = [i["src"] for i in info["images"] if not (i["complete"] and i["width"] > 0)]
        assert not broken, (kind, broken)
    assert found["home"]["images"] and len(found["gallery"]["images"]) >= 14
    shown = runner.images(TUTORIALS / f"{tutorial}.md")
    assert len(found["tutorial"]["images"]) >= len(shown)


# -- the runner -----------------------------------------------------------------------------------
PAGE = """# A page

```python
import os
x = 1
```

```python notest
raise RuntimeError("shown, not run")
```

```bash
echo not python
```

!!! note
    ```python
    x += 1
    cwd = os.getcwd()
    quiet = os.environ["LOSSATLAS_QUIET"]
    ```

![a figure](figures/page-1.png)
"""


def test_blocks_are_the_python_ones_without_notest(tmp_path) -> None:
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    assert runner.blocks(page) == [
        "import os\nx = 1\n",
        'x += 1\ncwd = os.getcwd()\nquiet = os.environ["LOSSATLAS_QUIET"]\n',
    ]
    assert runner.images(page) == ["figures/page-1.png"]


def test_run_shares_one_namespace_in_the_page_folder(tmp_path, monkeypatch) -> None:
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    page.write_text(PAGE)
    monkeypatch.delenv("LOSSATLAS_QUIET", raising=False)
    before = os.getcwd()
    ns = runner.run(page)
    assert ns["x"] == 2 and ns["quiet"] == "1"
    assert Path(ns["cwd"]) == page.parent.resolve()
    assert (page.parent / "figures").is_dir()  # made for the pictures the page shows
    assert os.getcwd() == before and "LOSSATLAS_QUIET" not in os.environ
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    assert Path(runner.run(page, elsewhere)["cwd"]) == elsewhere.resolve()


def test_an_error_names_the_page_block_and_line(tmp_path) -> None:
    page = tmp_path / "broken.md"
    page.write_text("# Broken\n\n```python\nx = 1\n```\n\ntext\n\n```python\n\ny = 1 / 0\n```\n")
    with pytest.raises(runner.TutorialError, match=r"broken\.md, block 2 \(line 10\)") as info:
        runner.run(page)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    frames = traceback.extract_tb(info.value.__cause__.__traceback__)
    assert (frames[-1].filename, frames[-1].lineno) == (str(page), 11)  # the page's own line


@pytest.mark.parametrize(
    "page", [DOCS / "index.md", *sorted((DOCS / "concepts").glob("*.md"))], ids=lambda p: p.stem
)
def test_the_examples_of_the_home_and_concept_pages_run(page, tmp_path) -> None:
    runner.run(page, tmp_path)


# -- the hook -------------------------------------------------------------------------------------
def test_a_page_reruns_only_when_out_of_date(tmp_path) -> None:
    hooks = _module("lossatlas_docs_hooks", DOCS / "hooks.py")
    page = tmp_path / "01-page.md"
    page.write_text("```python\nopen('figures/01-page-1.png', 'wb').close()\n```\n"
                    "![x](figures/01-page-1.png)\n")  # fmt: skip
    assert not hooks._fresh(page, tmp_path, 0.0)  # never run
    hooks._run(page, tmp_path)
    assert (tmp_path / "figures" / "01-page-1.png").is_file()
    assert hooks._fresh(page, tmp_path, 0.0)
    assert not hooks._fresh(page, tmp_path, time.time() + 60)  # the package changed since
    (tmp_path / "figures" / "01-page-1.png").unlink()
    assert not hooks._fresh(page, tmp_path, 0.0)  # a picture is missing
    page.write_text("```python\nraise ValueError('no')\n```\n")
    with pytest.raises(Exception, match=r"01-page\.md, block 1 \(line 2\): ValueError: no"):
        hooks._run(page, tmp_path)
    assert not hooks._fresh(page, tmp_path, 0.0)  # a failed run leaves no stamp


def test_docstrings_are_adapted_for_the_reference_pages() -> None:
    hooks = _module("lossatlas_docs_hooks", DOCS / "hooks.py")
    doc = "Intro.\n\nExample:\n    Text:\n    >>> 1 + 1\n    2\n\n    After.\n"
    assert hooks.fence_doctests(doc) == (
        "Intro.\n\nExample:\n    Text:\n\n"
        "    ```pycon\n    >>> 1 + 1\n    2\n    ```\n\n    After.\n"
    )
    doc = (
        "Args:\n    a, b: shared\n        more.\n    c: own.\n"
        "    d, e,\n        f: wrapped.\n\nReturns:\n    x, y: not split.\n"
    )
    assert hooks.split_grouped_parameters(doc) == (
        "Args:\n    a: (with `b`) shared\n        more.\n    b: (with `a`) shared\n        more.\n"
        "    c: own.\n    d: (with `e`, `f`) wrapped.\n    e: (with `d`, `f`) wrapped.\n"
        "    f: (with `d`, `e`) wrapped.\n\nReturns:\n    x, y: not split.\n"
    )
