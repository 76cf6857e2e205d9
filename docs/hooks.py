"""mkdocs hooks (`hooks:` in mkdocs.yml): make the pictures the pages show before the build.

Neither the tutorials' figures (`docs/tutorials/figures/`) nor the gallery's thumbnails
(`docs/gallery/`) are committed. `on_pre_build` runs, with `tutorial_runner`:

- every tutorial page, `docs/tutorials/*.md` in file-name order, in its own folder, so each
  writes the `figures/<page>-<n>.png` it shows;
- the gallery page, `docs/gallery.md`, in `docs/`, whose blocks call every `figure_x` /
  `plot_x` of `lossatlas.plot` on small problems and write `gallery/<name>.png`.

A page is run again only when it is out of date: when it has no stamp (`.<page>.ok` beside its
pictures, written after a clean run), when a picture it shows is missing, or when the page or
any file of `src/lossatlas` is newer than its stamp. `LOSSATLAS_DOCS_RERUN=1` runs every page.
A failing page stops the build with its name, block number and line.

`DocstringFixes` is a griffe extension (mkdocs.yml loads it for mkdocstrings) that adapts the
package's docstrings to the reference pages without touching them: doctests are fenced as
`pycon` code (outside an `Examples:` section Markdown would read `>>>` as quotes), and
parameters documented together (`lr, momentum: ...`, also wrapped over two lines) become one
entry each ("(with `momentum`) ..."), so every entry matches a parameter of the signature and
griffe can still warn about a documented parameter the signature lacks.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import traceback
from pathlib import Path

import griffe
from mkdocs.exceptions import PluginError

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
SOURCE = ROOT / "src" / "lossatlas"
TUTORIALS = DOCS / "tutorials"
GALLERY_PAGE = DOCS / "gallery.md"

if str(DOCS) not in sys.path:
    sys.path.insert(0, str(DOCS))
import tutorial_runner  # noqa: E402 (docs/ is not a package)

log = logging.getLogger("mkdocs.hooks.lossatlas")


def _newest(folder: Path) -> float:
    """The latest modification time of a Python file under `folder` (0 if none)."""
    return max((p.stat().st_mtime for p in folder.rglob("*.py")), default=0.0)


def _stamp(page: Path, workdir: Path) -> Path:
    pictures = "gallery" if page == GALLERY_PAGE else "figures"
    return workdir / pictures / f".{page.stem}.ok"


def _fresh(page: Path, workdir: Path, source_time: float) -> bool:
    """Whether the page's last clean run is newer than the page and the package, and every
    picture the page shows is there."""
    stamp = _stamp(page, workdir)
    if not stamp.exists():
        return False
    done = stamp.stat().st_mtime
    if done < page.stat().st_mtime or done < source_time:
        return False
    pictures = tutorial_runner.images(page)
    return all((workdir / p).is_file() for p in pictures)


def _run(page: Path, workdir: Path) -> float:
    start = time.perf_counter()
    stamp = _stamp(page, workdir)
    stamp.unlink(missing_ok=True)
    try:
        tutorial_runner.run(page, workdir)
    except tutorial_runner.TutorialError as exc:
        cause = exc.__cause__ or exc
        lines = traceback.format_exception(type(cause), cause, cause.__traceback__)
        printed = exc.output.splitlines()[-20:]
        shown = "".join(f"  | {line}\n" for line in printed)
        heard = f"its last printed lines:\n{shown}" if printed else ""
        raise PluginError(f"{exc}\n{heard}{''.join(lines)}") from exc
    seconds = time.perf_counter() - start
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(f"{seconds:.1f} s\n")
    return seconds


def on_pre_build(config, **kwargs) -> None:
    """Run every out-of-date tutorial page, then the gallery if it is out of date."""
    force = os.environ.get("LOSSATLAS_DOCS_RERUN", "").strip().lower() not in ("", "0", "false")
    import torch

    # The pages' models are small: one thread is fastest and immune to OpenMP threads spinning
    # on a busy machine (the tests run the same way).
    torch.set_num_threads(1)
    source_time = _newest(SOURCE)
    jobs = [(page, page.parent) for page in tutorial_runner.pages(TUTORIALS)]
    jobs.append((GALLERY_PAGE, DOCS))
    for page, workdir in jobs:
        name = page.relative_to(DOCS)
        if not force and _fresh(page, workdir, source_time):
            log.debug("%s: pictures up to date", name)
            continue
        log.info("Running %s", name)
        log.info("Ran %s in %.1f s", name, _run(page, workdir))


# -- docstrings -----------------------------------------------------------------------------------
_PARAMETER_SECTIONS = re.compile(
    r"^(?P<indent>\s*)(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|"
    r"Other Parameters):\s*$"
)
_GROUPED = re.compile(r"^(?P<names>\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)+)\s*,?\s*:(?P<rest>.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def fence_doctests(text: str) -> str:
    """Wrap every run of doctest lines (`>>>` and `...` lines, then their output up to a blank
    line) that is not already in a fenced block in a ```pycon fence."""
    lines, out, i, fenced = text.splitlines(), [], 0, False
    while i < len(lines):
        line, stripped = lines[i], lines[i].lstrip()
        if stripped.startswith(("```", "~~~")):
            fenced = not fenced
        if fenced or not stripped.startswith(">>>"):
            out.append(line)
            i += 1
            continue
        pad = line[: _indent(line)]
        j = i
        while j < len(lines) and lines[j].strip() and _indent(lines[j]) >= len(pad):
            j += 1
        if out and out[-1].strip():
            out.append("")
        out += [f"{pad}```pycon", *lines[i:j], f"{pad}```"]
        if j < len(lines) and lines[j].strip():
            out.append("")
        i = j
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def split_grouped_parameters(text: str) -> str:
    """In parameter sections, `a, b: text` becomes `a: (with `b`) text` and `b: (with `a`)
    text`, continuation lines repeated under each; names wrapped before the colon are joined."""
    lines, out, i = text.splitlines(), [], 0
    section: int | None = None  # indentation of the current parameter section's title
    item: int | None = None  # indentation of its entries
    while i < len(lines):
        line = lines[i]
        title = _PARAMETER_SECTIONS.match(line)
        if title:
            section, item = len(title["indent"]), None
            out.append(line)
            i += 1
            continue
        if section is not None and line.strip():
            if _indent(line) <= section:
                section = None
            elif item is None:
                item = _indent(line)
        if section is None or not line.strip() or _indent(line) != item:
            out.append(line)
            i += 1
            continue
        head, j = line.strip(), i + 1
        if ":" not in head and head.endswith(",") and j < len(lines) and _indent(lines[j]) > item:
            head, j = f"{head} {lines[j].strip()}", j + 1  # names wrapped before the colon
        grouped = _GROUPED.match(head)
        if not grouped:
            out.append(line)
            i += 1
            continue
        more = []
        while j < len(lines) and lines[j].strip() and _indent(lines[j]) > item:
            more.append(lines[j])
            j += 1
        names = re.split(r"\s*,\s*", grouped["names"])
        for name in names:
            others = ", ".join(f"`{n}`" for n in names if n != name)
            out += [f"{' ' * item}{name}: (with {others}){grouped['rest']}", *more]
        i = j
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


class DocstringFixes(griffe.Extension):
    """Fence doctests and split grouped parameters in every docstring griffe reads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            value = fence_doctests(obj.docstring.value)
            obj.docstring.value = split_grouped_parameters(value)
