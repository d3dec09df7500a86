"""The broken-image detector on real frames (tests/images/data/frames.npz, cut from decoded
streams): GIMP run natively on Xvfb here and the Inkscape image show none; the same images
built without librsvg2-common (so GTK cannot load SVG icons) show one per icon."""
from __future__ import annotations

import numpy as np
import pytest

from tests.images import glyphs

FRAMES = np.load(glyphs.DATA / "frames.npz")


@pytest.mark.parametrize("name", ["gimp_native", "inkscape_image"])
def test_complete_windows_have_no_broken_image_glyphs(name: str) -> None:
    assert glyphs.find(FRAMES[name]) == []
    assert glyphs.best_score(FRAMES[name]) < glyphs.THRESHOLD - 0.05  # a margin, not luck


@pytest.mark.parametrize("name, at_least", [
    ("gimp_without_librsvg", 20),  # the toolbox: every tool icon
    ("inkscape_without_librsvg", 15),  # the tool bar
    ("inkscape_welcome_without_librsvg", 6),  # the welcome dialog's tool row (24 px icons)
])
def test_without_the_svg_loader_every_icon_is_a_glyph(name: str, at_least: int) -> None:
    assert len(glyphs.find(FRAMES[name])) >= at_least


def test_ncc_finds_a_template_where_it_was_cut_from() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (60, 80)).astype(float)
    scores = glyphs.ncc(image, image[20:36, 30:46])
    assert np.unravel_index(int(np.argmax(scores)), scores.shape) == (20, 30)
    assert scores.max() == pytest.approx(1.0)
    assert glyphs.ncc(np.full((40, 40), 7.0), image[:16, :16]).max() == 0  # flat: no glyph
