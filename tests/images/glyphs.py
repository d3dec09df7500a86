"""Finding GTK's "broken image" glyphs in a decoded frame.

When GTK cannot load an icon (an SVG without librsvg2-common's gdk-pixbuf loader) it draws its
missing-image glyph instead: GTK 2 (GIMP 2.10) a white page with a red cross, GTK 3 (Inkscape)
the theme's `image-missing` picture frame. The templates in data/ were cut from frames of the
real images built without librsvg2-common, as this module's tests and the live checks decode
them. A glyph is found by normalized cross-correlation (brightness- and contrast-independent:
the GTK 3 glyph takes the theme's colours) of the frame's luminance with each template."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"
THRESHOLD = 0.8  # a match; the apps' own icons stay well below (tests/images/test_glyphs.py)


@dataclass(frozen=True)
class Match:
    template: str
    x: int
    y: int
    score: float


def luminance(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def templates() -> dict[str, np.ndarray]:
    return {path.stem: luminance(np.load(path)) for path in sorted(DATA.glob("glyph-*.npy"))}


def ncc(image: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Normalized cross-correlation of `template` at every position where it fits in `image`
    (both 2-D): FFT for the products, integral images for each window's mean and energy."""
    th, tw = template.shape
    h, w = image.shape
    t = template - template.mean()
    t_norm = np.sqrt((t * t).sum())
    shape = (h + th - 1, w + tw - 1)
    products = np.fft.irfft2(np.fft.rfft2(image, shape) * np.fft.rfft2(t[::-1, ::-1], shape),
                             shape)[th - 1:h, tw - 1:w]

    def window_sums(values: np.ndarray) -> np.ndarray:
        s = np.pad(values, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
        return s[th:, tw:] - s[:-th, tw:] - s[th:, :-tw] + s[:-th, :-tw]

    n = th * tw
    sums = window_sums(image)
    variance = np.maximum(window_sums(image * image) - sums * sums / n, 0)
    denominator = np.sqrt(variance) * t_norm
    # a flat window (no contrast) is no glyph
    return np.where(denominator > 1e-6 * n, products / np.maximum(denominator, 1e-12), 0.0)


def find(rgb: np.ndarray, threshold: float = THRESHOLD) -> list[Match]:
    """Every broken-image glyph in an RGB frame (H×W×3), best first, one match per glyph."""
    image = luminance(rgb)
    found: list[Match] = []
    for name, template in templates().items():
        scores = ncc(image, template)
        th, tw = template.shape
        while True:
            y, x = np.unravel_index(int(np.argmax(scores)), scores.shape)
            best = float(scores[y, x])
            if best < threshold:
                break
            found.append(Match(name, int(x), int(y), round(best, 3)))
            scores[max(0, y - th):y + th, max(0, x - tw):x + tw] = -1  # this glyph is counted
    return sorted(found, key=lambda m: -m.score)


def best_score(rgb: np.ndarray) -> float:
    image = luminance(rgb)
    return max(float(ncc(image, t).max()) for t in templates().values())
