"""Run the ```python blocks of a Markdown page, in order, in one namespace.

The documentation's tutorial pages (`docs/tutorials/*.md`) and the gallery (`docs/gallery.md`)
are executed by this module: by the mkdocs hook (`docs/hooks.py`) before every build, so the
figures they write exist when the site is built, and by the tests. It is a plain module, not
part of the package: `sys.path.insert(0, "docs")`, then `import tutorial_runner`.

Rules:

- Every fenced block whose info string is `python` (or `py`, or `python` followed by options,
  e.g. `python title="x.py"`) runs; a block marked `python notest` is shown but not run.
  Fences may be indented (inside an admonition or a list item): the indentation is removed.
- The folders of the images the page shows (`![alt](figures/x.png)`) are made first.
- The blocks run in one namespace, in page order, as a script run as `__main__` would, with the
  working directory set to the page's folder (or `workdir`), `LOSSATLAS_QUIET=1` and
  matplotlib's Agg backend; the previous working directory, environment value and `__main__`
  module are restored afterwards.
- An error in a block is raised again as `TutorialError` naming the page, the block's number
  (1-based, counting only the blocks that run) and its first line in the page; the traceback
  points at the page's own lines.

Command line: `python docs/tutorial_runner.py [PAGE.md | FOLDER] ...` (default: the tutorials).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parent
TUTORIALS = DOCS / "tutorials"

# An opening fence: indentation, three or more backticks or tildes, then the info string.
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*?)[ \t]*$")
_RUNNABLE = {"python", "py", "python3"}


class TutorialError(RuntimeError):
    """A block of a page failed; the message names the page, the block and its line, and
    `output` holds what the page printed before it failed (when `run` captured it)."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


@dataclass(frozen=True)
class Block:
    """One fenced code block: its code (indentation removed), first code line, info string."""

    code: str
    line: int  # 1-based line number of the block's first code line in the page
    info: str

    @property
    def runs(self) -> bool:
        words = self.info.replace("{", " ").replace("}", " ").replace(".", " ").split()
        return bool(words) and words[0] in _RUNNABLE and "notest" not in words[1:]


def _dedent(line: str, indent: str) -> str:
    return line[len(indent) :] if line.startswith(indent) else line.lstrip(" \t")


def fenced_blocks(text: str) -> list[Block]:
    """Every fenced code block of a Markdown text, in order, whatever its language."""
    lines = text.splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, info = opening["indent"], opening["fence"], opening["info"]
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            body.append(_dedent(lines[j], indent))
            j += 1
        found.append(Block("\n".join(body) + "\n", i + 2, info))
        i = j + 1
    return found


def blocks(page: Path | str) -> list[str]:
    """The code of the page's runnable ```python blocks, in order (not `python notest`)."""
    return [b.code for b in fenced_blocks(Path(page).read_text(encoding="utf-8")) if b.runs]


def images(page: Path | str) -> list[str]:
    """The relative paths of the images the page shows (`![alt](path)`), in order."""
    text = Path(page).read_text(encoding="utf-8")
    found = re.findall(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    return [p for p in found if not re.match(r"^([a-z][a-z0-9+.-]*:|/)", p, re.I)]


@contextlib.contextmanager
def _environment(workdir: Path, namespace: dict) -> Iterator[None]:
    """cwd, LOSSATLAS_QUIET=1, the Agg backend and a `__main__` module, restored afterwards."""
    import matplotlib

    backend = matplotlib.get_backend()
    matplotlib.use("Agg", force=True)
    cwd, quiet = os.getcwd(), os.environ.get("LOSSATLAS_QUIET")
    main = sys.modules.get("__main__")
    module = types.ModuleType("__main__")
    module.__dict__.update(namespace)
    namespace.clear()
    os.environ["LOSSATLAS_QUIET"] = "1"
    os.chdir(workdir)
    sys.modules["__main__"] = module  # pickle finds classes the page defines, as runpy does
    try:
        yield module.__dict__
    finally:
        if main is not None:
            sys.modules["__main__"] = main
        os.chdir(cwd)
        if quiet is None:
            os.environ.pop("LOSSATLAS_QUIET", None)
        else:
            os.environ["LOSSATLAS_QUIET"] = quiet
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")
        with contextlib.suppress(Exception):
            matplotlib.use(backend, force=True)


def run(page: Path | str, workdir: Path | str | None = None, *, echo: bool = False) -> dict:
    """Execute the page's runnable blocks in order in one namespace; return the namespace.

    Args:
        page: the Markdown file.
        workdir: the working directory while the blocks run (default: the page's folder).
        echo: let what the blocks print through; by default it is captured (and handed to
            the error if a block fails), so a build log stays readable.

    Raises:
        TutorialError: a block raised; the message says which page, block and line, and the
            original exception is its `__cause__`.
    """
    page = Path(page).resolve()
    runnable = [b for b in fenced_blocks(page.read_text(encoding="utf-8")) if b.runs]
    workdir = Path(workdir).resolve() if workdir is not None else page.parent
    for image in images(page):  # the folders the page writes its pictures to
        (workdir / image).parent.mkdir(parents=True, exist_ok=True)
    namespace: dict = {"__name__": "__main__", "__file__": str(page), "__builtins__": __builtins__}
    output = io.StringIO()
    capture = contextlib.ExitStack()
    if not echo:
        capture.enter_context(contextlib.redirect_stdout(output))
        capture.enter_context(contextlib.redirect_stderr(output))
    with _environment(workdir, namespace) as ns, capture:
        for number, block in enumerate(runnable, 1):
            where = f"{page.name}, block {number} (line {block.line})"
            try:
                # Leading newlines put the block's lines at their line numbers in the page.
                code = compile("\n" * (block.line - 1) + block.code, str(page), "exec")
                exec(code, ns)
            except (Exception, SystemExit) as exc:  # Ctrl-C is not the page's fault
                message = f"{where}: {type(exc).__name__}: {exc}".strip().removesuffix(":")
                raise TutorialError(message, output.getvalue()) from exc
        return dict(ns)


def pages(folder: Path | str) -> list[Path]:
    """The Markdown pages of a folder, in file-name order."""
    return sorted(Path(folder).glob("*.md"))


def run_all(folder: Path | str = TUTORIALS) -> dict[str, float]:
    """Run every page of `folder` in file-name order; seconds per page, by file name."""
    seconds: dict[str, float] = {}
    for page in pages(folder):
        start = time.perf_counter()
        run(page)
        seconds[page.name] = time.perf_counter() - start
    return seconds


def main(argv: list[str] | None = None) -> int:
    targets = [Path(a) for a in (argv if argv is not None else sys.argv[1:])] or [TUTORIALS]
    for target in targets:
        for page in pages(target) if target.is_dir() else [target]:
            start = time.perf_counter()
            run(page, echo=True)
            print(f"{page}: {len(blocks(page))} blocks, {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
