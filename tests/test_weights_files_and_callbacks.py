"""Weights files and callbacks refuse bad input clearly, and leave nothing broken behind:
damaged or hostile files, values that do not fit the dtype, failed saves, checkpoint
paths naming values a fit does not log, and CSV files after an error."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile

import numpy as np
import pytest

from numlayers.callbacks import Callback, CSVLogger, ModelCheckpoint
from numlayers.layers import Dense
from numlayers.models import Sequential
from numlayers.weights_io import WeightsFileError


def small_model() -> Sequential:
    model = Sequential()
    model.add(Dense(3, input_shape=(4,)))
    model.compile("sgd", "mse")
    return model


@pytest.fixture
def saved(tmp_path):
    model = small_model()
    path = tmp_path / "weights.npz"
    model.save_weights(str(path))
    return model, path


def rewrite_member(path, name: str, payload: bytes) -> None:
    """Replace one member of the archive at ``path``."""
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    members[name] = payload
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "damage",
    ["truncated", "text", "empty", "no-manifest", "manifest-not-json", "manifest-wrong-shape",
     "wrong-dtype", "wrong-shape"],
)  # fmt: skip
def test_damaged_weights_files_get_a_clear_error_and_leave_the_model_unchanged(saved, damage):
    model, path = saved
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "text":
        path.write_text("these are not weights\n")
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "no-manifest":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("layer_0/0:W.npy", npy_bytes(np.zeros((4, 3))))
    elif damage == "manifest-not-json":
        rewrite_member(path, "__manifest__.npy", npy_bytes(np.frombuffer(b"{oops", np.uint8)))
    elif damage == "manifest-wrong-shape":
        manifest = json.dumps({"format": "numlayers-weights-1", "layers": [[1, 2]]}).encode()
        rewrite_member(path, "__manifest__.npy", npy_bytes(np.frombuffer(manifest, np.uint8)))
    elif damage == "wrong-dtype":
        rewrite_member(path, "layer_0/0:W.npy", npy_bytes(np.array([["a"] * 3] * 4)))
    else:
        rewrite_member(path, "layer_0/0:W.npy", npy_bytes(np.zeros((3, 4))))
    before = model.get_weights()
    with pytest.raises(WeightsFileError, match=str(path.name)):
        model.load_weights(str(path))
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_a_header_claiming_a_huge_array_is_refused_before_anything_is_allocated(saved):
    model, path = saved
    lying = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        lying, {"descr": "<f8", "fortran_order": False, "shape": (4, 3_000_000_000)}
    )
    rewrite_member(path, "layer_0/0:W.npy", lying.getvalue() + b"\0" * 96)
    tracemalloc.start()
    with pytest.raises(WeightsFileError, match=r"shape \(4, 3000000000\), expected \(4, 3\)"):
        model.load_weights(str(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 << 20


def test_values_too_large_for_the_weights_dtype_are_refused_by_name(saved):
    model, path = saved
    W, b = model.layers[0].get_weights()
    big = W.astype(np.float64)
    big[0, 0] = 1e39
    with pytest.raises(ValueError, match="'W'.*too large for float32"):
        model.layers[0].set_weights([big, b])
    rewrite_member(path, "layer_0/0:W.npy", npy_bytes(big))
    with pytest.raises(ValueError, match="too large for float32"):
        model.load_weights(str(path))
    np.testing.assert_array_equal(model.layers[0].get_weights()[0], W)


def test_a_failed_save_leaves_no_partial_file(tmp_path, monkeypatch):
    model = small_model()

    def failing_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        model.save_weights(str(tmp_path / "weights.npz"))
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_path_naming_an_unlogged_value_fails_before_the_first_epoch(tmp_path):
    model = small_model()
    X, y = np.ones((4, 4), "float32"), np.zeros((4, 3), "float32")
    before = model.get_weights()
    checkpoint = ModelCheckpoint(str(tmp_path / "w-{epoch}-{val_loss:.2f}.npz"))
    with pytest.raises(ValueError, match=r"\['val_loss'\].*validation data"):
        model.fit(X, y, nb_epoch=2, verbose=0, callbacks=[checkpoint])
    np.testing.assert_array_equal(model.get_weights()[0], before[0])
    best_only = ModelCheckpoint(str(tmp_path / "w.npz"), monitor="val_acc", save_best_only=True)
    with pytest.raises(ValueError, match="val_acc"):
        model.fit(X, y, nb_epoch=1, verbose=0, callbacks=[best_only])
    # with validation data the same path works
    model.fit(X, y, nb_epoch=1, verbose=0, callbacks=[checkpoint], validation_data=(X, y))
    assert len(list(tmp_path.iterdir())) == 1


def test_csv_logger_keeps_no_file_open_when_training_stops_with_an_error(tmp_path):
    class Failing(Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("stop")

    model = small_model()
    logger = CSVLogger(str(tmp_path / "log.csv"))
    with pytest.raises(RuntimeError, match="stop"):
        model.fit(np.ones((4, 4)), np.zeros((4, 3)), nb_epoch=2, verbose=0,
                  callbacks=[logger, Failing()])  # fmt: skip
    assert not any(isinstance(value, io.IOBase) for value in vars(logger).values())
    lines = (tmp_path / "log.csv").read_text().splitlines()
    assert lines[0] == "epoch,loss" and lines[1].startswith("0,")
