"""Keras 0.3 scripts import from Keras 0.3's module paths: every public name of its
layer, objective and utility modules that numlayers has comes from the same path
here, and the utilities those scripts use (Progbar, get_file) behave as there."""

from __future__ import annotations

import importlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

#: Keras 0.3.3's public names, by module, as its scripts import them
KERAS_03_NAMES = {
    "layers.core": "Dense Dropout Activation Flatten Reshape Permute RepeatVector Merge "
    "LambdaMerge TimeDistributedMerge TimeDistributedDense AutoEncoder MaxoutDense Highway "
    "Masking MaskedLayer Lambda ActivityRegularization Siamese SiameseHead add_shared_layer",
    "layers.convolutional": "Convolution1D Convolution2D Convolution3D MaxPooling1D "
    "AveragePooling1D MaxPooling2D AveragePooling2D MaxPooling3D AveragePooling3D "
    "UpSampling1D UpSampling2D UpSampling3D ZeroPadding1D ZeroPadding2D ZeroPadding3D "
    "conv_output_length",
    "layers.recurrent": "SimpleRNN GRU LSTM",
    "layers.embeddings": "Embedding",
    "layers.normalization": "BatchNormalization",
    "layers.advanced_activations": "LeakyReLU PReLU ELU ParametricSoftplus ThresholdedLinear "
    "ThresholdedReLU SReLU",
    "layers.noise": "GaussianNoise GaussianDropout",
    "objectives": "mean_squared_error mean_absolute_error mean_absolute_percentage_error "
    "mean_squared_logarithmic_error squared_hinge hinge categorical_crossentropy "
    "binary_crossentropy poisson cosine_proximity get mse mae mape msle",
    "utils.generic_utils": "get_from_module make_tuple Progbar",
    "utils.data_utils": "get_file",
    "utils.np_utils": "to_categorical",
    "datasets.mnist": "load_data",
    "datasets.cifar10": "load_data",
}


@pytest.mark.parametrize("module", sorted(KERAS_03_NAMES))
def test_keras_03_names_import_from_keras_03_paths(module):
    found = importlib.import_module(f"numlayers.{module}")
    missing = [name for name in KERAS_03_NAMES[module].split() if not hasattr(found, name)]
    assert missing == []
    assert set(KERAS_03_NAMES[module].split()) <= set(dir(found))


def test_a_keras_03_cnn_script_imports_run_as_written():
    from numlayers.layers import pooling, reshaping
    from numlayers.layers.convolutional import MaxPooling2D, conv_output_length
    from numlayers.layers.core import Flatten

    assert Flatten is reshaping.Flatten and MaxPooling2D is pooling.MaxPooling2D
    assert conv_output_length(28, 3, "valid", 1) == 26
    assert conv_output_length(28, 3, "same", 2) == 14
    with pytest.raises(ImportError, match="cannot import name 'Convolution4D'"):
        from numlayers.layers.convolutional import Convolution4D  # noqa: F401
    star: dict[str, object] = {}
    exec("from numlayers.layers.core import *", star)  # as some Keras 0.3 scripts wrote
    assert {"Dense", "Flatten", "Merge"} <= set(star) and "np" not in star


def test_progbar_shows_the_means_weighted_by_steps(capsys):
    from numlayers.utils.generic_utils import Progbar

    bar = Progbar(10, verbose=2)
    bar.add(4, [("loss", 1.0)])
    bar.update(10, [("loss", 0.5), ("acc", 0.75)])
    assert bar.means() == pytest.approx({"loss": (4 * 1.0 + 6 * 0.5) / 10, "acc": 0.75})
    assert bar.sum_values["loss"] == pytest.approx([7.0, 10])
    assert capsys.readouterr().out.endswith("loss: 0.7000 - acc: 0.7500\n")
    live = Progbar(3)  # verbose 1: a live bar, closed at the target
    live.add(3, [("loss", 2e-4)])
    assert "loss: 2.0000e-04" in capsys.readouterr().out


def test_get_from_module_finds_names_and_instantiates():
    from numlayers.utils.generic_utils import get_from_module, make_tuple

    table = {"two": lambda scale=1: 2 * scale}
    assert get_from_module("two", table, "thing", instantiate=True, kwargs={"scale": 3}) == 6
    assert get_from_module(len, table, "thing") is len
    with pytest.raises(ValueError, match="invalid thing: 'three'"):
        get_from_module("three", table, "thing")
    assert make_tuple(1, 2) == (1, 2)


def archive_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_get_file_downloads_once_and_unpacks_only_inside_its_directory(tmp_path, monkeypatch):
    from numlayers.utils.data_utils import get_file

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    source = tmp_path / "words.txt"
    source.write_text("hello")
    path = get_file("words.txt", source.as_uri())
    assert Path(path).read_text() == "hello"
    source.unlink()  # cached: no second download
    assert get_file("words.txt", source.as_uri()) == path
    with pytest.raises(OSError):
        get_file("other.txt", (tmp_path / "absent.txt").as_uri())
    cache = tmp_path / "home" / ".keras" / "datasets"
    assert sorted(p.name for p in cache.iterdir()) == ["words.txt"]  # no partial file left

    packed = tmp_path / "babi.tar.gz"
    packed.write_bytes(archive_of({"babi/tasks/qa1.txt": b"1 Mary moved."}))
    folder = get_file("babi", packed.as_uri(), untar=True)
    assert (Path(folder) / "tasks" / "qa1.txt").read_text() == "1 Mary moved."
    escaping = tmp_path / "bad.tar.gz"
    escaping.write_bytes(archive_of({"../outside.txt": b"no"}))
    with pytest.raises(tarfile.TarError):
        get_file("bad", escaping.as_uri(), untar=True)
    assert not (cache.parent / "outside.txt").exists()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty home directory, so the dataset cache starts empty."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def test_mnist_loads_its_numpy_archive_and_refuses_the_pickle(home):
    from numlayers.datasets import mnist

    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        "y_train": np.array([5, 0, 4], np.uint8),
        "x_test": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
        "y_test": np.array([7, 2], np.uint8),
    }
    cache = home / ".keras" / "datasets"
    cache.mkdir(parents=True)
    np.savez(cache / "mnist.npz", **arrays)
    (X_train, y_train), (X_test, y_test) = mnist.load_data()
    for got, name in zip((X_train, y_train, X_test, y_test), arrays, strict=True):
        np.testing.assert_array_equal(got, arrays[name])
    with pytest.raises(ValueError, match="mnist.pkl.gz' is not a NumPy archive.*runs code"):
        mnist.load_data("mnist.pkl.gz")


def cifar_batch(labels: list[int], seed: int) -> tuple[bytes, np.ndarray]:
    images = np.random.default_rng(seed).integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
    records = (
        bytes([label]) + image.tobytes() for label, image in zip(labels, images, strict=True)
    )
    return b"".join(records), images


def test_cifar10_reads_its_binary_batches_channels_first(home, tmp_path, monkeypatch):
    from numlayers.datasets import cifar10

    members, expected = {}, []
    for index, name in enumerate([*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin"]):
        data, images = cifar_batch([index, 9 - index], seed=index)
        members[f"cifar-10-batches-bin/{name}"] = data
        expected.append(images)
    packed = tmp_path / "cifar.tar.gz"
    packed.write_bytes(archive_of(members))
    monkeypatch.setattr(cifar10, "ORIGIN", packed.as_uri())
    (X_train, y_train), (X_test, y_test) = cifar10.load_data()
    assert X_train.shape == (10, 3, 32, 32) and X_train.dtype == np.uint8
    np.testing.assert_array_equal(X_train, np.concatenate(expected[:5]))
    np.testing.assert_array_equal(y_train[:, 0], [0, 9, 1, 8, 2, 7, 3, 6, 4, 5])
    np.testing.assert_array_equal(X_test, expected[5])
    assert y_test.shape == (2, 1)
    packed.unlink()  # unpacked once: the archive is not needed again
    assert cifar10.load_data()[1][0].shape == (2, 3, 32, 32)
    broken = tmp_path / "broken.bin"
    broken.write_bytes(members["cifar-10-batches-bin/test_batch.bin"][:-1])
    with pytest.raises(ValueError, match="not a whole number of CIFAR-10 records"):
        cifar10.read_batch(str(broken))
    broken.write_bytes(cifar_batch([10], seed=0)[0])
    with pytest.raises(ValueError, match="label 10 is not a CIFAR-10 class"):
        cifar10.read_batch(str(broken))
