"""Parameter initialisation, as torch's defaults for Conv2d and Linear.

torch initialises both weight and bias of Conv2d and Linear uniformly in
[-1/sqrt(fan_in), 1/sqrt(fan_in)] (kaiming_uniform_ with a=sqrt(5) gives exactly
this bound for the weight). fan_in = in_features, or in_channels*KH*KW.
"""

from __future__ import annotations

import numpy as np


def make_rng(rng=None):
    """A numpy Generator from None (fresh entropy), an int seed, or a Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def uniform_fan_in(rng, shape, fan_in: int, dtype=np.float32):
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)
