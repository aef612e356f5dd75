"""Pictures of a trained LeNet, forward and backward: ``python -m lenet_np.visualize``.

    python -m lenet_np.visualize --checkpoint PATH --out DIR [--metrics FILE] [--steps FILE [FILE ...]]

Writes PNG files (matplotlib, Agg backend) into DIR, those of ``PICTURES`` (registry.py):

    filters.png              the filters of every convolution (conv.0's 6 and conv.3's 16x6),
                             one panel per layer, each with its colour bar
    filters_change.png       the same filters at initialisation (recreated from the
                             checkpoint's seed), after training, and the change
    feature_maps.png         one test image through every layer, a colour bar per row
    gradient_maps.png        its backward twin: dL/d(output) of every layer for the same image
                             (``lenet_np.backprop``), red > 0 > blue, a colour bar per row
    activations_compare.png  the first two convolutions' activations for two classes
                             (--classes, default Pullover Coat), four images each, and the
                             difference of the two classes' mean activations
    saliency.png             dL/dimage of the true class's loss for a few test images: the
                             image, the gradient, and both overlaid
    mistakes.png             the most confident mistakes (highest predicted probability first)
    gradient_norms.png       every parameter's gradient norm over the training steps (log
                             scale), one panel per per-step metrics file, same y scale, each
                             named by its run's activation, variant and pooling when the file says
    curves.png               loss per step and per epoch, train and test accuracy

The network is the checkpoint's (``checkpoint.load_network``). The per-epoch metrics come
from --metrics (as written by ``lenet_np.train --metrics``) or else from the checkpoint's
history; the per-step metrics from --steps, by default the ``.steps`` file beside --metrics
(``metrics.csv`` -> ``metrics.steps.csv``); ``lenet_np.metrics`` reads both. The test images
come from ``lenet_np.data`` (``--data-dir``, else its search path); when no ``--data-dir`` is
given and no data set is found, random images stand in (the pictures say so). Each PNG is
written atomically: a failed run leaves no half-written file. The network is any LeNet
variant: the layers are found by type (every Conv2d, the activation after it), not by name.

The package, by concern: ``arrays`` (the numbers, no matplotlib), ``mosaic`` (many maps in one
image), ``plotting`` (matplotlib, atomic writes), one module per kind of picture (``filters``,
``maps``, ``activations``, ``predictions``, ``curves``), ``registry`` (PICTURES and the Scene
they are drawn from) and ``command`` (the command line).
"""

from ..evaluate import predict_logits
from .activations import plot_activations_compare
from .arrays import (
    class_means,
    conv_activations,
    conv_layers,
    describe,
    filter_changes,
    fractional_epochs,
    initial_network,
    input_gradients,
    layer_gradients,
    layer_outputs,
    most_confident_mistakes,
    norm_ratios,
    predict_proba,
    saliency_examples,
    softmax,
)
from .command import (
    DEFAULT_CLASSES,
    MAX_MISTAKES,
    MAX_STEPS_FILES,
    build_parser,
    class_name,
    main,
    parse_args,
    run,
    steps_files,
)
from .curves import RUNNING_NOTE, plot_curves, plot_gradient_norms, run_label
from .filters import plot_filters, plot_filters_change
from .maps import draw_gradient_maps, plot_feature_maps, plot_gradient_maps
from .mosaic import filter_mosaic, grid_mosaic, mosaic
from .predictions import plot_mistakes, plot_saliency
from .registry import PICTURES, Scene, Skip

__all__ = [
    "DEFAULT_CLASSES", "MAX_MISTAKES", "MAX_STEPS_FILES", "PICTURES", "RUNNING_NOTE", "Scene", "Skip",
    "build_parser", "class_means", "class_name", "conv_activations", "conv_layers", "describe", "draw_gradient_maps",
    "filter_changes", "filter_mosaic", "fractional_epochs", "grid_mosaic", "initial_network", "input_gradients",
    "layer_gradients", "layer_outputs", "main", "mosaic", "most_confident_mistakes", "norm_ratios", "parse_args",
    "plot_activations_compare", "plot_curves", "plot_feature_maps", "plot_filters", "plot_filters_change",
    "plot_gradient_maps", "plot_gradient_norms", "plot_mistakes", "plot_saliency", "predict_logits", "predict_proba",
    "run", "run_label", "saliency_examples", "softmax", "steps_files",
]
