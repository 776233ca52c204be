"""Layers, one module per family, and :func:`deserialize` for configs."""

from __future__ import annotations

from typing import Any

from numlayers.layers.advanced_activations import (
    ELU,
    LeakyReLU,
    ParametricSoftplus,
    PReLU,
    SReLU,
    ThresholdedLinear,
    ThresholdedReLU,
)
from numlayers.layers.base import LAYER_CLASSES, Layer
from numlayers.layers.containers import AutoEncoder, Container
from numlayers.layers.convolutional import Convolution1D, Convolution2D, convert_kernel
from numlayers.layers.convolutional3d import Convolution3D
from numlayers.layers.core import (
    Activation,
    ActivityRegularization,
    Dense,
    Dropout,
    Lambda,
    MaskedLambda,
    MaskedLayer,
    Masking,
    TimeDistributedDense,
)
from numlayers.layers.dense_variants import Highway, MaxoutDense
from numlayers.layers.embeddings import Embedding
from numlayers.layers.merging import LambdaMerge, Merge, MergeNode
from numlayers.layers.noise import GaussianDropout, GaussianNoise
from numlayers.layers.normalization import BatchNormalization
from numlayers.layers.pooling import (
    AveragePooling1D,
    AveragePooling2D,
    AveragePooling3D,
    MaxPooling1D,
    MaxPooling2D,
    MaxPooling3D,
    UpSampling1D,
    UpSampling2D,
    UpSampling3D,
    ZeroPadding1D,
    ZeroPadding2D,
    ZeroPadding3D,
)
from numlayers.layers.recurrent import GRU, LSTM, Recurrent, SimpleRNN
from numlayers.layers.reshaping import Flatten, Permute, RepeatVector, Reshape
from numlayers.layers.siamese import Siamese, SiameseHead, add_shared_layer
from numlayers.layers.time_merge import TimeDistributedMerge
from numlayers.layers.wrappers import Bidirectional, TimeDistributed
from numlayers.serialization import nested_config, safe_mode_scope

__all__ = [
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "UpSampling1D",
    "UpSampling2D",
    "UpSampling3D",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "ZeroPadding3D",
    "ELU",
    "GRU",
    "LSTM",
    "Activation",
    "BatchNormalization",
    "Bidirectional",
    "Container",
    "Convolution1D",
    "Convolution2D",
    "Convolution3D",
    "ActivityRegularization",
    "AutoEncoder",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "GaussianDropout",
    "GaussianNoise",
    "Highway",
    "Lambda",
    "LambdaMerge",
    "Layer",
    "LeakyReLU",
    "MaskedLambda",
    "MaskedLayer",
    "Masking",
    "MaxoutDense",
    "Merge",
    "MergeNode",
    "PReLU",
    "ParametricSoftplus",
    "Permute",
    "Recurrent",
    "RepeatVector",
    "Reshape",
    "SReLU",
    "Siamese",
    "SiameseHead",
    "SimpleRNN",
    "ThresholdedLinear",
    "ThresholdedReLU",
    "TimeDistributed",
    "TimeDistributedDense",
    "TimeDistributedMerge",
    "convert_kernel",
    "add_shared_layer",
    "deserialize",
]


def deserialize(
    config: dict[str, Any],
    custom_objects: dict[str, Any] | None = None,
    safe_mode: bool | None = None,
) -> Layer:
    """Rebuild any layer from its ``get_config()`` (dispatching on ``class_name``).

    Loading runs no code: functions a config names (a Lambda's) resolve only through
    ``custom_objects`` and :func:`numlayers.register_function`, unless ``safe_mode`` is
    False (trusted files only; None keeps the enclosing load's setting, by default safe).
    See :mod:`numlayers.serialization`.
    """
    class_name = config.get("class_name")
    if custom_objects and class_name in custom_objects:
        cls = custom_objects[class_name]
    elif class_name in LAYER_CLASSES:
        cls = LAYER_CLASSES[class_name]
    else:
        raise ValueError(f"unknown layer class {class_name!r} in config")
    with safe_mode_scope(safe_mode), nested_config(repr(class_name)):
        return cls.from_config(config, custom_objects)
