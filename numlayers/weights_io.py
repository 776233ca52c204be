"""Weights on disk: an ``.npz`` archive that loads bit-exact and never runs code.

Weights are stored by position, as Keras 0.3's HDF5 files were: layer ``i``'s
weight ``j`` under ``"layer_<i>/<j>:<weight name>"``, so a model rebuilt from
the same code (with new automatic layer names) loads them. A JSON manifest
(bytes, not a pickle) records the layers' names, classes and weight counts.
Loading uses ``allow_pickle=False`` and checks every count and shape before any
weight is written, so a wrong file leaves the model untouched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from numlayers.layers.base import Layer

FORMAT = "numlayers-weights-1"


def _key(position: int, layer: Layer, index: int) -> str:
    return f"layer_{position}/{index}:{layer.param_names[index]}"


def save_weights(
    layers: Sequence[Layer], filepath: str | os.PathLike[str], overwrite: bool
) -> None:
    """Write every layer's weights to ``filepath`` (refusing to replace a file unless asked)."""
    path = os.fspath(filepath)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    manifest = {
        "format": FORMAT,
        "layers": [[layer.name, type(layer).__name__, len(layer.params)] for layer in layers],
    }
    arrays: dict[str, Any] = {
        "__manifest__": np.frombuffer(json.dumps(manifest).encode(), np.uint8)
    }
    for position, layer in enumerate(layers):
        for index, weight in enumerate(layer.get_weights()):
            arrays[_key(position, layer, index)] = weight
    # np.savez appends .npz to names without it; write through a file object to keep the name
    temporary = path + ".partial"
    with open(temporary, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(temporary, path)


def load_weights(layers: Sequence[Layer], filepath: str | os.PathLike[str]) -> None:
    """Read weights saved by :func:`save_weights` into ``layers`` (matched by name)."""
    path = os.fspath(filepath)
    with np.load(path, allow_pickle=False) as archive:
        if "__manifest__" not in archive.files:
            raise ValueError(f"{path} is not a numlayers weights file (no manifest)")
        manifest = json.loads(archive["__manifest__"].tobytes().decode())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{path} has format {manifest.get('format')!r}, expected {FORMAT!r}")
        saved = manifest["layers"]
        if len(saved) != len(layers):
            raise ValueError(
                f"{path} holds weights of {len(saved)} layers, the model has {len(layers)}"
            )
        checked = []
        for position, (layer, (name, class_name, count)) in enumerate(
            zip(layers, saved, strict=True)
        ):
            if count != len(layer.params) or class_name != type(layer).__name__:
                raise ValueError(
                    f"{path}: layer {position} is a {class_name} '{name}' with {count} weights, "
                    f"but the model's is {layer.label} with {len(layer.params)}"
                )
            values = [archive[_key(position, layer, index)] for index in range(count)]
            checked.append(layer.check_weights(values))
    for layer, values in zip(layers, checked, strict=True):
        layer.write_weights(values)
