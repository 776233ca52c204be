"""Weights on disk: an ``.npz`` archive that loads bit-exact and never runs code.

Weights are stored by position, as Keras 0.3's HDF5 files were: layer ``i``'s
weight ``j`` under ``"layer_<i>/<j>:<weight name>"``, so a model rebuilt from
the same code (with new automatic layer names) loads them. A JSON manifest
(bytes, not a pickle) records the layers' names, classes and weight counts.
Loading uses ``allow_pickle=False``, reads each array's header (shape, dtype) and
checks it against the model before reading the array's data, and checks every count,
shape and value before any weight is written, so a wrong, truncated or hostile file
gets a clear error and leaves the model untouched.
"""

from __future__ import annotations

import json
import os
import zipfile
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
    try:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


class WeightsFileError(ValueError):
    """A weights file that is not one :func:`save_weights` wrote for this model."""


#: what reading a damaged archive raises, turned into :class:`WeightsFileError`
_DAMAGED_FILE_ERRORS = (
    zipfile.BadZipFile,
    EOFError,
    KeyError,
    TypeError,
    UnicodeDecodeError,
    RecursionError,
    OSError,
    ValueError,
)


def load_weights(layers: Sequence[Layer], filepath: str | os.PathLike[str]) -> None:
    """Read weights saved by :func:`save_weights` into ``layers`` (matched by position)."""
    path = os.fspath(filepath)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise WeightsFileError(f"{path} is not a numlayers weights file (not an archive)")
            checked = _read_checked(archive, layers, path)
    except WeightsFileError:
        raise
    except _DAMAGED_FILE_ERRORS as error:
        raise WeightsFileError(
            f"{path} is not a readable numlayers weights file "
            f"({type(error).__name__}: {error}); the model is unchanged"
        ) from error
    for layer, values in zip(layers, checked, strict=True):
        layer.write_weights(values)


def _read_checked(archive: Any, layers: Sequence[Layer], path: str) -> list[list[np.ndarray]]:
    """Every layer's weights from ``archive``, checked against ``layers``."""
    if "__manifest__" not in archive.files:
        raise WeightsFileError(f"{path} is not a numlayers weights file (no manifest)")
    manifest = json.loads(_read_array(archive, "__manifest__", None, path).tobytes().decode())
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise WeightsFileError(f"{path} has format {found!r}, expected {FORMAT!r}")
    saved = manifest.get("layers")
    if not isinstance(saved, list) or not all(_is_layer_entry(entry) for entry in saved):
        raise WeightsFileError(f"{path}: its manifest does not list layers as [name, class, count]")
    if len(saved) != len(layers):
        raise WeightsFileError(
            f"{path} holds weights of {len(saved)} layers, the model has {len(layers)}"
        )
    checked = []
    for position, (layer, (name, class_name, count)) in enumerate(zip(layers, saved, strict=True)):
        if count != len(layer.params) or class_name != type(layer).__name__:
            raise WeightsFileError(
                f"{path}: layer {position} is a {class_name} '{name}' with {count} weights, "
                f"but the model's is {layer.label} with {len(layer.params)}"
            )
        values = [
            _read_array(archive, _key(position, layer, index), tuple(param.shape), path)
            for index, param in enumerate(layer.params)
        ]
        checked.append(layer.check_weights(values))
    return checked


def _is_layer_entry(entry: Any) -> bool:
    return (
        isinstance(entry, list)
        and len(entry) == 3
        and isinstance(entry[0], str)
        and isinstance(entry[1], str)
        and isinstance(entry[2], int)
        and not isinstance(entry[2], bool)
    )


def _read_array(archive: Any, key: str, shape: tuple[int, ...] | None, path: str) -> np.ndarray:
    """Array ``key`` of ``archive``, its header checked first: row-major, a number dtype,
    ``shape`` (the manifest: a 1-D byte vector) and a member as long as that header says,
    so a lying header cannot make the reader allocate more than the file holds."""
    if key not in archive.files:
        raise WeightsFileError(f"{path} has no array {key!r}")
    member = archive.zip.getinfo(f"{key}.npy")
    with archive.zip.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        readers = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }
        if version not in readers:
            raise WeightsFileError(f"{path}: array {key!r} has .npy format {version}")
        stored_shape, fortran_order, dtype = readers[version](stream)
        data_start = stream.tell()
    if fortran_order:  # never written here: column-major data would load transposed
        raise WeightsFileError(f"{path}: array {key!r} is stored in Fortran order")
    if dtype.kind not in "biuf" or dtype.hasobject:
        raise WeightsFileError(f"{path}: array {key!r} has dtype {dtype}, expected numbers")
    expected = (
        shape if shape is not None else (stored_shape[0],) if len(stored_shape) == 1 else None
    )
    if expected is None or tuple(stored_shape) != expected:
        raise WeightsFileError(
            f"{path}: array {key!r} has shape {tuple(stored_shape)}, expected {expected}"
        )
    if member.file_size != data_start + int(np.prod(stored_shape)) * dtype.itemsize:
        raise WeightsFileError(f"{path}: array {key!r} is truncated or padded")
    return np.asarray(archive[key])
