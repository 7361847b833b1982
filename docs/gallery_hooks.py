"""How sphinx-gallery runs the tutorials for the site (conf.py names these as "gallery_hooks.<name>").

Each script gets a command line from :func:`reset_argv`: an output folder of its own under the
generated gallery (docs/tutorials/_out/NN_name/, git-ignored, emptied first, so a build never writes
into tutorials/ and never shows a figure left over from an earlier build) and, for the steps in
``QUICK``, ``--quick``. The scripts save their figures with ``_common.save``, which closes each one,
so matplotlib's own scraper would find nothing; :func:`new_figures` instead shows under each code
block the PNGs that block wrote into the script's output folder, in the order they were written.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from sphinx_gallery.scrapers import figure_rst

# The steps run in their --quick mode on the site: the slow ones (their default sizes take 10-25 s
# each on two cores). Steps 1-7 run at their default sizes, which cost no more than --quick does.
# GALLERY_HEADER.txt says the same to the reader: keep the two in step.
QUICK = {"08_se_resnet_summary", "09_train_se_resnet20", "10_role_of_excitation", "11_gpu_cupy", "12_profile"}

# output folder -> {png: mtime_ns} of the figures already placed on the page
_shown: dict[Path, dict[Path, int]] = {}


def out_dir(gallery_conf: dict[str, Any], src_file: str) -> Path:
    """docs/tutorials/_out/NN_name: where the step writes its figures during the build."""
    gallery = gallery_conf["gallery_dirs"]
    gallery = gallery if isinstance(gallery, str) else gallery[0]
    return Path(gallery_conf["src_dir"]) / gallery / "_out" / Path(src_file).stem


def reset_argv(gallery_conf: dict[str, Any], script_vars: dict[str, Any]) -> list[str]:
    """The command line the step sees (after its own path, which sphinx-gallery puts in sys.argv[0])."""
    src_file = script_vars["src_file"]
    out = out_dir(gallery_conf, src_file)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    _shown[out] = {}
    # relative to the script's folder (the working directory while it runs), so the "figure: ..." lines
    # on the page do not show the path of the machine that built the site
    argv = ["--out", os.path.relpath(out, Path(src_file).parent)]
    return (["--quick"] if Path(src_file).stem in QUICK else []) + argv


def new_figures(block: Any, block_vars: dict[str, Any], gallery_conf: dict[str, Any]) -> str:
    """rST for the PNGs written (or rewritten) in the step's output folder since its previous block."""
    out = out_dir(gallery_conf, block_vars["src_file"])
    shown = _shown.setdefault(out, {})
    written = sorted(((png.stat().st_mtime_ns, png) for png in out.glob("*.png")) if out.is_dir() else [])
    images = []
    for stamp, png in written:
        if shown.get(png) == stamp:
            continue
        shown[png] = stamp
        target = next(block_vars["image_path_iterator"])
        shutil.copyfile(png, target)
        images.append(target)
    return figure_rst(images, gallery_conf["src_dir"])
