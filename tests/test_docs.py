"""The documentation's static checks, its code, and the built pages in a browser.

- every public name (``__all__`` of lazymat, lazymat.solvers, lazymat.ml, lazymat.keops,
  lazymat.plugin) is documented in the API reference sources (``docs/api/*.rst``);
- every script of ``examples/`` is in a gallery section, with the title block
  sphinx-gallery needs, and parses its gallery arguments run as sphinx-gallery runs it;
- the code blocks of the getting-started, concept and migration pages run; on the
  migration pages, each peer block (KeOps, GeomLoss, POT, OTT-JAX) and the lazymat block
  next to it run from the same setup, and the names both assign must hold the same values:
  the peer library is the reference;
- no ``print`` in the library (``logging`` only, logger ``lazymat.*``);
- the built HTML (``make docs``, not part of ``make test``; skipped when absent): every
  example's page with its figure and output, every table and plot of BENCHMARKS.md on the
  benchmarks page, and the index and a gallery page rendered in headless Chromium
  (screenshots kept in pytest's tmp dir).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API = DOCS / "api"
HTML = DOCS / "_build" / "html"
PUBLIC_MODULES = ("lazymat", "lazymat.solvers", "lazymat.ml", "lazymat.keops", "lazymat.plugin")
LIBRARY = ("core", "solvers", "ml", "plugins/*/lazymat_*")
# the command-line programs, whose output on stdout is what they are for
COMMANDS = {"core/cli.py", "core/demo.py"}


def gallery() -> Any:
    spec = importlib.util.spec_from_file_location("lazymat_gallery", DOCS / "lazymat_gallery.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- API reference ------------------------------------------------------------------------


def documented_names() -> dict[str, str]:
    """Full name -> page of every object the API sources document (autosummary entries,
    ``data``/``class`` directives, automodule)."""
    names: dict[str, str] = {}
    for page in sorted(API.glob("*.rst")):
        module, in_summary = "", False
        for line in page.read_text().splitlines():
            if m := re.match(r"\.\. (?:py:)?currentmodule:: (\S+)", line):
                module, in_summary = m[1], False
            elif m := re.match(r"\.\. automodule:: (\S+)", line):  # also the current module
                module, in_summary = m[1], False
                names[module] = page.name
            elif re.match(r"\.\. autosummary::", line):
                in_summary = True
            elif m := re.match(r"\.\. (?:py:)?(?:data|class|function):: (\S+)", line):
                name = m[1]
                names[name if "." in name else f"{module}.{name}"] = page.name
                in_summary = False
            elif in_summary and (m := re.match(r"   ([~\w.]+)$", line)):
                entry = m[1].lstrip("~")
                full = entry if entry.startswith("lazymat") else f"{module}.{entry}"
                names[full] = page.name
            elif in_summary and line and not line.startswith(" "):
                in_summary = False
    return names


def resolve(full: str) -> Any:
    parts = full.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(full)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_is_in_the_api_reference(module_name: str) -> None:
    """Each name is documented under this module, or is an object documented elsewhere that
    this module's page names (``lazymat.Backend`` is ``lazymat.plugin.Backend``)."""
    module = importlib.import_module(module_name)
    documented = documented_names()
    objects = {full: resolve(full) for full in documented}
    page = API / f"{module_name.removeprefix('lazymat.') if '.' in module_name else 'lazymat'}.rst"
    text = page.read_text()
    missing = []
    for name in module.__all__:
        if f"{module_name}.{name}" in documented:
            continue
        obj = getattr(module, name)
        elsewhere = [full for full, o in objects.items() if o is obj]
        if not (elsewhere and re.search(rf"\b{re.escape(name)}\b", text)):
            missing.append(name)
    assert not missing, f"{module_name}.__all__ names missing from {page.relative_to(ROOT)}: {missing}"


def test_the_api_reference_documents_nothing_that_does_not_exist() -> None:
    """Every entry resolves to an object (a renamed function would otherwise vanish quietly)."""
    for full in documented_names():
        resolve(full)


# -- gallery ------------------------------------------------------------------------------


def test_every_example_is_in_the_gallery() -> None:
    g = gallery()
    assert g.missing_examples() == [], "add them to a section of SECTIONS in docs/lazymat_gallery.py"
    on_disk = {p.name for p in (ROOT / "examples").glob("*.py")}
    assert set(g.gallery_examples()) <= on_disk, set(g.gallery_examples()) - on_disk
    assert len(on_disk) >= 10


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.stem)
def test_example_has_a_gallery_title_and_an_out_option(path: Path) -> None:
    """sphinx-gallery takes the page title from an underlined first docstring line; the
    gallery embeds the figure each script writes with ``--out``."""
    source = path.read_text()
    doc = ast.get_docstring(ast.parse(source), clean=False)
    assert doc is not None, f"{path.name} has no docstring"
    title, underline = doc.splitlines()[:2]
    assert set(underline) == {"="} and len(underline) == len(title), f"{path.name}: {title!r}/{underline!r}"
    assert '"--out"' in source, f"{path.name} takes no --out"


class ParsedArgumentsError(Exception):
    """Raised by the patched ``parse_args``: the example's command line, parsed."""


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.stem)
def test_example_parses_its_gallery_arguments_without_its_docstring(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sphinx-gallery runs a script as ``__main__`` without its docstring (``__doc__`` is
    empty) and with the arguments of :func:`reset_argv`; the script must get as far as
    parsing them (stopped there: the run itself is the docs build's)."""
    argv = gallery().reset_argv({}, {"src_file": str(path)})
    parse_args = argparse.ArgumentParser.parse_args

    def parse_and_stop(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        raise ParsedArgumentsError(parse_args(self, *args, **kwargs))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    monkeypatch.setattr(sys, "argv", [path.name, *argv])
    tree = ast.parse(path.read_text(), str(path))
    tree.body = tree.body[1:]  # the docstring, which the gallery shows as text
    with pytest.raises(ParsedArgumentsError) as parsed:
        exec(compile(tree, str(path), "exec"), {"__name__": "__main__", "__doc__": ""})
    assert parsed.value.args[0].out == argv[-1]


# -- code on the pages --------------------------------------------------------------------

PEERS = {"keops": "KeOps", "geomloss": "GeomLoss", "pot": "POT", "ott": "OTT-JAX"}
# how close a peer's numbers are to ours, relative to the largest entry of the peer's
PEER_RTOL = {"keops": 1e-9, "geomloss": 1e-5, "pot": 1e-5, "ott": 1e-6}


def code_blocks(page: Path) -> list[tuple[str, str]]:
    """(caption, code) of every python code block of an rst page, in order, list-table
    cells included: a block is what is indented past the column of its ``..``."""
    lines = page.read_text().splitlines()
    blocks = []
    for n, line in enumerate(lines):
        column = line.find(".. code-block:: python")
        if column < 0:
            continue
        caption, body, k = "", [], n + 1
        while k < len(lines) and lines[k].strip().startswith(":"):  # options
            if m := re.match(r"\s*:caption: (.*)", lines[k]):
                caption = m[1].strip()
            k += 1
        for line in lines[k:]:
            if line.strip() and len(line) - len(line.lstrip()) <= column:
                break
            body.append(line)
        indent = min(len(ln) - len(ln.lstrip()) for ln in body if ln.strip())
        blocks.append((caption, "\n".join(ln[indent:] for ln in body).strip("\n")))
    return blocks


def as_array(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    if hasattr(v, "toarray"):
        v = v.toarray()
    return np.asarray(v, dtype=float)


def same_values(name: str, ours: Any, peer: Any, rtol: float) -> None:
    a, b = as_array(ours), as_array(peer)
    assert a.size == b.size, f"{name}: {a.shape} vs the peer's {b.shape}"
    a, b = a.reshape(-1), b.reshape(-1)
    scale = max(float(np.abs(b).max()), 1e-300)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale, err_msg=name)


def comparable(v: Any) -> bool:
    return isinstance(v, (int, float, np.ndarray)) or type(v).__module__.split(".")[0] in (
        "torch",
        "jax",
        "jaxlib",
    )


@pytest.mark.slow
@pytest.mark.parametrize("page", sorted(PEERS))
def test_migration_page_runs_and_matches_the_peer(page: str) -> None:
    pytest.importorskip({"keops": "pykeops", "geomloss": "geomloss", "pot": "ot", "ott": "ott"}[page])
    blocks = code_blocks(DOCS / "migration" / f"{page}.rst")
    shared: dict[str, Any] = {}
    pairs = 0
    i = 0
    while i < len(blocks):
        caption, code = blocks[i]
        if caption == "setup":
            exec(code, shared)
        elif caption == PEERS[page]:
            assert blocks[i + 1][0] == "lazymat", f"block {i} ({caption}) has no lazymat block next to it"
            peer_ns, our_ns = dict(shared), dict(shared)
            exec(code, peer_ns)
            exec(blocks[i + 1][1], our_ns)
            common = [n for n in our_ns if n in peer_ns and n not in shared and comparable(our_ns[n])]
            assert common, f"block {i}: the two sides assign no common result to compare"
            for name in common:
                same_values(name, our_ns[name], peer_ns[name], PEER_RTOL[page])
            pairs += 1
            i += 1
        else:
            exec(code, dict(shared))
        i += 1
    assert pairs >= 2


@pytest.mark.parametrize(
    "page",
    ["getting_started.rst", *(f"concepts/{p.name}" for p in sorted((DOCS / "concepts").glob("*.rst")))],
)
def test_page_code_runs(page: str) -> None:
    """The blocks of a page run in order in one namespace (a page is one session)."""
    namespace: dict[str, Any] = {}
    for _, code in code_blocks(DOCS / page):
        exec(code, namespace)


def test_code_block_extraction_sees_every_block() -> None:
    """The parser finds each block of a page, captions and bodies (the tests above rely on it)."""
    blocks = code_blocks(DOCS / "migration" / "pot.rst")
    captions = [c for c, _ in blocks]
    assert captions[0] == "setup" and captions.count("POT") == captions.count("lazymat") >= 4
    assert all(code.strip() and not code.startswith(" ") for _, code in blocks)
    total = (DOCS / "migration" / "pot.rst").read_text().count(".. code-block:: python")
    assert len(blocks) == total


# -- the library logs, it does not print --------------------------------------------------


def library_files() -> list[Path]:
    files = [p for pattern in LIBRARY for d in ROOT.glob(pattern) for p in d.rglob("*.py")]
    return sorted(p for p in files if str(p.relative_to(ROOT)) not in COMMANDS)


def test_no_print_in_the_library() -> None:
    """Any use of ``print`` (a call, or ``log=print`` as a default) in core/, solvers/, ml/ and
    the plugins' packages; the ``lazymat`` command's modules print by design."""
    found: dict[str, list[int]] = {}
    files = library_files()
    assert len(files) > 50
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Name) and node.id == "print":
                found.setdefault(str(path.relative_to(ROOT)), []).append(node.lineno)
    assert not found, f"print in the library (use logging.getLogger('lazymat.<module>')): {found}"


# -- the built pages in a browser ---------------------------------------------------------


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium on this machine (Debian: apt-get install chromium)")


def screenshot(page: Path, out: Path) -> np.ndarray:
    from PIL import Image

    subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,1600",
            f"--screenshot={out}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return np.asarray(Image.open(out).convert("RGB"))


def built() -> Path:
    index = HTML / "index.html"
    if not index.is_file():
        pytest.skip("the documentation is not built (make docs)")
    return index


def test_built_gallery_pages_embed_each_examples_figure() -> None:
    """Every example of every section has its page, with the figure it drew and its printed
    output (sphinx-gallery's "Out" block)."""
    built()
    for name, folder in gallery().gallery_examples().items():
        page = HTML / "auto_examples" / folder / f"{Path(name).stem}.html"
        assert page.is_file(), f"{name}: no page {page.relative_to(ROOT)}"
        html = page.read_text()
        figure = f"sphx_glr_{Path(name).stem}_001.png"
        assert re.search(rf"<img[^>]+{figure}", html), f"{name}: the page embeds no figure"
        assert (HTML / "_images" / figure).stat().st_size > 5_000, figure
        assert 'class="sphx-glr-script-out' in html, f"{name}: no printed output on the page"


def test_built_benchmarks_page_holds_every_table_and_plot_of_benchmarks_md() -> None:
    """The benchmarks page includes BENCHMARKS.md: as many tables as the file's markdown tables
    (their separator rows), and each plot it shows."""
    built()
    page = HTML / "benchmarks.html"
    if page.stat().st_mtime < (ROOT / "BENCHMARKS.md").stat().st_mtime:
        pytest.skip("BENCHMARKS.md changed after the documentation was built (make docs)")
    source = (ROOT / "BENCHMARKS.md").read_text()
    html = page.read_text()
    tables = len(re.findall(r"^\|( *:?-+:? *\|)+ *$", source, re.MULTILINE))
    assert tables > 10 and html.count("<table") == tables
    plots = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", source)
    assert plots
    for plot in plots:
        assert re.search(rf'<img[^>]+src="_images/{re.escape(Path(plot).name)}"', html), plot
        assert (HTML / "_images" / Path(plot).name).is_file(), plot


def test_built_pages_render_in_chromium(tmp_path: Path) -> None:
    index = built()
    g = gallery()
    folder, _, _, examples = next(s for s in g.SECTIONS if s[3])
    example_page = HTML / "auto_examples" / folder / f"{Path(next(iter(examples))).stem}.html"
    html = example_page.read_text()
    assert re.search(r"<img[^>]+sphx_glr_\w+_001\.png", html), "the gallery page embeds no figure"
    for page, name in ((index, "index.png"), (example_page, "example.png")):
        pixels = screenshot(page, tmp_path / name)
        assert pixels.shape[:2] == (1600, 1280)
        colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
        # a page with text, a navigation bar and (on the example) a figure, not a blank or
        # error page: hundreds of colours (anti-aliased text), several percent of dark pixels
        assert colours > 200, f"{name}: {colours} colours"
        assert (pixels.mean(axis=2) < 128).mean() > 0.005, f"{name}: almost no dark pixels"
