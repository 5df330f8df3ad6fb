"""The example gallery: which example goes in which section, at which size, and its figures.

``examples/`` stays one flat folder of scripts (``make demo`` and the tests run them by
path); the gallery groups them by theme. :data:`SECTIONS` is the one table: a section
(folder name, title, introduction) and, for each of its examples, the command-line
arguments the gallery runs it with (small sizes: the whole gallery runs in every
``make docs``). :func:`stage` copies the scripts into ``docs/_gallery_src/<section>/``
(generated, not committed) with a header per section, and sphinx-gallery builds
``docs/auto_examples`` from there. An example that is in ``examples/`` but in no section
fails the build (and ``tests/test_docs.py``), so a new example cannot go missing.

Every example writes its figure with ``--out`` (that is how ``make demo`` and the tests
use them): :func:`reset_argv` points ``--out`` into ``docs/_build/gallery_figures`` and
:func:`written_figures` (an image scraper) embeds the PNG files each example wrote there;
an example that writes none has its open matplotlib figures scraped as usual.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
EXAMPLES = DOCS.parent / "examples"
STAGED = DOCS / "_gallery_src"
FIGURES = DOCS / "_build" / "gallery_figures"

# (folder, title, introduction, {example file: gallery arguments})
SECTIONS: list[tuple[str, str, str, dict[str, list[str]]]] = [
    (
        "reductions",
        "Reductions and k-NN",
        "Nearest neighbours, clustering and densities: K-min, argmin and log-sum-exp "
        "reductions of symbolic distance matrices (``lazymat.ml``).",
        {
            "knn_classification.py": ["--n", "3000", "--grid", "120"],
            "kmeans_large.py": ["--n", "20000", "--k", "30"],
            "gmm_density.py": ["--n", "5000", "--grid", "100"],
            "hyperbolic_embedding.py": ["--depth", "4", "--per-node", "6"],
        },
    ),
    (
        "optimal_transport",
        "Optimal transport",
        "Sinkhorn divergences, transport plans, Brenier maps and Laguerre cells (``lazymat.solvers``).",
        {
            "gradient_flow.py": ["--n", "300", "--steps", "30"],
            "brenier_map.py": ["--n", "300", "--m", "100"],
            "power_particles.py": ["--n", "100", "--steps", "4", "--grid", "128"],
            "grid_transport.py": ["--n", "64"],
            "grid_barycenters.py": ["--n", "48", "--k", "4"],
        },
    ),
    (
        "kernel_solvers",
        "Kernel solvers and Gaussian processes",
        "Kernel linear systems by conjugate gradient, GPyTorch models on lazymat kernels, "
        "and kernel eigenproblems through SciPy.",
        {
            "kriging.py": ["--n", "2000"],
            "gp_regression.py": ["--n", "1000", "--steps", "30"],
            "spectral_moons.py": ["--n", "2000"],
        },
    ),
    (
        "registration",
        "Shape registration and LDDMM",
        "Hamiltonian (geodesic shooting) flows of kernel cometrics and the registrations built on them.",
        {
            "lddmm.py": ["--n", "100"],
        },
    ),
    (
        "scale_out",
        "Scale-out",
        "Problems larger than one machine's patience: block-sparse reductions and clusters.",
        {
            "scale_out.py": ["--n", "20000"],
        },
    ),
]


def gallery_examples() -> dict[str, str]:
    """Example file name -> the section that holds it."""
    return {name: folder for folder, _, _, examples in SECTIONS for name in examples}


def missing_examples() -> list[str]:
    """Scripts of ``examples/`` that no section lists (the build refuses them)."""
    listed = gallery_examples()
    return sorted(p.name for p in EXAMPLES.glob("*.py") if p.name not in listed)


def stage() -> list[str]:
    """Copy the examples into one folder per non-empty section; the folders, in order."""
    missing = missing_examples()
    if missing:
        raise RuntimeError(
            f"examples not in the gallery: {', '.join(missing)}; add each to a section of "
            f"SECTIONS in {Path(__file__).name}"
        )
    absent = [name for name in gallery_examples() if not (EXAMPLES / name).is_file()]
    if absent:
        raise RuntimeError(f"SECTIONS lists examples that do not exist: {', '.join(absent)}")
    shutil.rmtree(STAGED, ignore_errors=True)
    (STAGED).mkdir(parents=True)
    (STAGED / "GALLERY_HEADER.rst").write_text(
        "Gallery\n=======\n\nEvery example is a script of the repository's ``examples/`` folder, "
        "run at a small size while the documentation is built: the figures and the printed "
        "timings below come from that run (on the machine that built the pages). Each script "
        "takes larger sizes on its command line (``--help``).\n"
    )
    folders = []
    for folder, title, intro, examples in SECTIONS:
        if not examples:
            continue
        target = STAGED / folder
        target.mkdir()
        (target / "GALLERY_HEADER.rst").write_text(f"{title}\n{'-' * len(title)}\n\n{intro}\n")
        for name in examples:
            shutil.copy2(EXAMPLES / name, target / name)
        folders.append(folder)
    FIGURES.mkdir(parents=True, exist_ok=True)
    return folders


def subsection_order(path: str) -> int:
    """Sections in the order of :data:`SECTIONS` (sphinx-gallery's ``subsection_order``)."""
    names = [folder for folder, *_ in SECTIONS]
    folder = Path(path).name
    return names.index(folder) if folder in names else -1


def within_section_order(filename: str) -> int:
    """Examples in the order their section lists them."""
    for _, _, _, examples in SECTIONS:
        if filename in examples:
            return list(examples).index(filename)
    return len(gallery_examples())


def _figure(src_file: str) -> Path:
    return FIGURES / f"{Path(src_file).stem}.png"


def reset_argv(gallery_conf: dict[str, Any], script_vars: dict[str, Any]) -> list[str]:
    """The command line an example runs with in the gallery: its small size and ``--out``."""
    name = Path(script_vars["src_file"]).name
    for _, _, _, examples in SECTIONS:
        if name in examples:
            return [*examples[name], "--out", str(_figure(script_vars["src_file"]))]
    raise RuntimeError(f"{name} is in no gallery section")


def written_figures(block: Any, block_vars: dict[str, Any], gallery_conf: dict[str, Any]) -> str:
    """An image scraper: the PNG the example wrote with ``--out``, else its open figures."""
    import matplotlib.pyplot as plt
    from sphinx_gallery.scrapers import figure_rst, matplotlib_scraper

    written = _figure(block_vars["src_file"])
    if not written.is_file():
        return matplotlib_scraper(block, block_vars, gallery_conf)
    plt.close("all")  # the same figure, already written: not twice
    target = next(iter(block_vars["image_path_iterator"]))
    shutil.move(written, target)
    return figure_rst([target], gallery_conf["src_dir"])
