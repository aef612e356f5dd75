"""The pictures ``python -m lenet_np.visualize`` draws: PICTURES, file name -> function, in the
order they are drawn.

Adding a picture is one function and one entry: the function takes the Scene (what the
command loaded: the network, the test images, the metrics, the flags) and the path to write,
and returns the path it wrote, or raises Skip with the reason it cannot be drawn, which the
command prints as ``note: <reason>: <file> skipped``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..trace import CLASS_NAMES
from .activations import plot_activations_compare
from .arrays import initial_network, predict_proba, saliency_examples
from .curves import plot_curves, plot_gradient_norms, run_label
from .filters import plot_filters, plot_filters_change
from .maps import plot_feature_maps, plot_gradient_maps
from .predictions import plot_mistakes, plot_saliency


class Skip(Exception):
    """A picture that cannot be drawn from what was given; the message says why."""


@dataclass
class Scene:
    """What the pictures are drawn from."""
    net: object                  # the checkpoint's network
    settings: dict               # the checkpoint's settings (seed, variant, activation, ...)
    images: np.ndarray           # the test images (N, 1, 28, 28) and their labels (N,)
    labels: np.ndarray
    source: str                  # where the images come from, for the titles
    image: int                   # --image: the index of the image for feature_maps.png and gradient_maps.png
    classes: list                # --classes: two class indices
    max_mistakes: int            # --max-mistakes
    runs: list                   # [(path, metrics.read_steps(path))] of the per-step files
    history: list | None         # the per-epoch rows (metrics.epoch_rows), or None
    history_source: str          # where they come from

    @cached_property
    def probs(self) -> np.ndarray:
        """The network's class probabilities for every test image (computed once)."""
        return predict_proba(self.net, self.images)

    def one_image(self) -> tuple[np.ndarray, int, str]:
        """(image (1, 28, 28), its label, its description) of --image."""
        i = self.image
        return self.images[i], int(self.labels[i]), f"{self.source}, image #{i}"


def filters(scene: Scene, path: Path) -> Path:
    return plot_filters(scene.net, path)


def filters_change(scene: Scene, path: Path) -> Path:
    initial = initial_network(scene.settings)
    if initial is None:
        raise Skip("the checkpoint's settings hold no seed, so the initial weights cannot be recreated")
    return plot_filters_change(scene.net, initial, path, scene.settings["seed"])


def feature_maps(scene: Scene, path: Path) -> Path:
    image, label, source = scene.one_image()
    return plot_feature_maps(scene.net, image, label, path, source)


def gradient_maps(scene: Scene, path: Path) -> Path:
    image, label, source = scene.one_image()
    return plot_gradient_maps(scene.net, image, label, path, source)


def activations_compare(scene: Scene, path: Path) -> Path:
    missing = [CLASS_NAMES[c] for c in scene.classes if not np.any(scene.labels == c)]
    if missing:
        raise Skip(f"no {' and no '.join(missing)} among the {len(scene.labels)} test images")
    return plot_activations_compare(scene.net, scene.images, scene.labels, scene.classes, path, scene.source)


def saliency(scene: Scene, path: Path) -> Path:
    indices = saliency_examples(scene.probs, scene.labels)
    return plot_saliency(scene.net, scene.images, scene.labels, indices, path, scene.source)


def mistakes(scene: Scene, path: Path) -> Path:
    return plot_mistakes(scene.images, scene.labels, scene.probs, path, scene.source, scene.max_mistakes)


def gradient_norms(scene: Scene, path: Path) -> Path:
    with_norms = [(run_label(p, s.get("settings")), s) for p, s in scene.runs if s["grad_norms"]]
    if not with_norms:
        raise Skip("the per-step metrics hold no grad_norm:<parameter> columns" if scene.runs else
                   "no per-step metrics (--steps, or a .steps file beside --metrics)")
    return plot_gradient_norms(with_norms, path)


def curves(scene: Scene, path: Path) -> Path:
    if not scene.history:
        raise Skip("no metrics (--metrics) and no history in the checkpoint")
    first = scene.runs[0] if scene.runs else (None, None)
    return plot_curves(scene.history, path, scene.history_source, first[1], str(first[0]) if first[0] else "")


PICTURES = {
    "filters.png": filters,
    "filters_change.png": filters_change,
    "feature_maps.png": feature_maps,
    "gradient_maps.png": gradient_maps,
    "activations_compare.png": activations_compare,
    "saliency.png": saliency,
    "mistakes.png": mistakes,
    "gradient_norms.png": gradient_norms,
    "curves.png": curves,
}


def draw(scene: Scene, out: Path, note) -> list[Path]:
    """Draw every picture of PICTURES into ``out``; ``note(text)`` for each one skipped. The paths written."""
    written = []
    for name, picture in PICTURES.items():
        try:
            written.append(picture(scene, out / name))
        except Skip as skip:
            note(f"{skip}: {name} skipped")
    return written
