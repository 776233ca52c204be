"""numlayers.preprocessing.image: the affine transforms against NumPy references, the
generator's statistics, and the batch iterator's passes, seeds and threads."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from numlayers.preprocessing.image import (
    ImageDataGenerator,
    NumpyArrayIterator,
    apply_affine_transform,
    array_to_img,
    horizontal_flip,
    img_to_array,
    list_pictures,
    load_img,
    random_rotation,
    random_shear,
    random_shift,
    random_zoom,
    transform_matrix,
    vertical_flip,
)
from numlayers.testing import run_interleaved

FILL_MODES = ["nearest", "constant", "reflect", "wrap"]


def image(shape: tuple[int, ...] = (3, 8, 8), dtype: Any = np.float64, seed: int = 0) -> Any:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def plain_generator(**options: Any) -> ImageDataGenerator:
    """A generator with no featurewise options (nothing to fit) unless asked for."""
    settings: dict[str, Any] = {
        "featurewise_center": False,
        "featurewise_std_normalization": False,
    }
    settings.update(options)
    return ImageDataGenerator(**settings)


def shifted_reference(x: Any, rows: int, cols: int, cval: float) -> Any:
    """``x`` moved down by ``rows`` and right by ``cols`` pixels, the gap filled with cval."""
    height, width = x.shape[1:]
    pad_rows, pad_cols = abs(rows), abs(cols)
    padded = np.pad(x, ((0, 0), (pad_rows, pad_rows), (pad_cols, pad_cols)), constant_values=cval)
    return padded[
        :, pad_rows - rows : pad_rows - rows + height, pad_cols - cols : pad_cols - cols + width
    ]


# ------------------------------------------------------------------ geometric transforms
@pytest.mark.parametrize("size", [7, 8])
@pytest.mark.parametrize("turns", [1, 2, -1])
def test_rotation_by_right_angles_is_rot90_of_each_channel(size: int, turns: int) -> None:
    x = image((3, size, size))
    out = apply_affine_transform(x, transform_matrix(rotation=90 * turns), order=0)
    np.testing.assert_array_equal(out, np.rot90(x, k=turns, axes=(1, 2)))
    bilinear = apply_affine_transform(x, transform_matrix(rotation=90 * turns), order=1)
    np.testing.assert_allclose(bilinear, np.rot90(x, k=turns, axes=(1, 2)), atol=1e-12)


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("rows, cols", [(2, -3), (-1, 0), (0, 5), (9, 0)])
def test_integer_shift_with_constant_fill_is_slice_and_pad(
    order: int, rows: int, cols: int
) -> None:
    x = image()
    out = apply_affine_transform(
        x, transform_matrix(shift=(rows, cols)), order=order, fill_mode="constant", cval=-7.0
    )
    np.testing.assert_array_equal(out, shifted_reference(x, rows, cols, -7.0))


@pytest.mark.parametrize("order", [0, 1])
def test_wrap_mode_is_np_roll(order: int) -> None:
    x = image()
    out = apply_affine_transform(x, transform_matrix(shift=(2, -3)), order=order, fill_mode="wrap")
    np.testing.assert_array_equal(out, np.roll(x, (2, -3), axis=(1, 2)))


def test_reflect_and_nearest_modes_match_np_pad() -> None:
    x = image()
    matrix = transform_matrix(shift=(0, 3))
    reflected = apply_affine_transform(x, matrix, order=0, fill_mode="reflect")
    symmetric = np.pad(x, ((0, 0), (0, 0), (3, 0)), mode="symmetric")[:, :, :8]
    np.testing.assert_array_equal(reflected, symmetric)
    nearest = apply_affine_transform(x, matrix, order=0, fill_mode="nearest")
    np.testing.assert_array_equal(
        nearest, np.pad(x, ((0, 0), (0, 0), (3, 0)), mode="edge")[..., :8]
    )


@pytest.mark.parametrize("fill_mode", FILL_MODES)
@pytest.mark.parametrize("order", [0, 1])
def test_identity_transforms_leave_the_image_unchanged(fill_mode: str, order: int) -> None:
    x = image()
    for matrix in (np.eye(3), np.eye(2), transform_matrix(), transform_matrix(zoom=(1, 1))):
        out = apply_affine_transform(x, matrix, order=order, fill_mode=fill_mode)
        np.testing.assert_array_equal(out, x)
        assert out is not x and not np.shares_memory(out, x)


def test_bilinear_half_pixel_shift_of_a_ramp_gives_midpoints() -> None:
    ramp = np.tile(np.arange(8.0), (2, 5, 1))  # value = column
    out = apply_affine_transform(ramp, transform_matrix(shift=(0, 0.5)), order=1)
    np.testing.assert_allclose(out[:, :, 1:], ramp[:, :, 1:] - 0.5)
    np.testing.assert_allclose(out[:, :, 0], 0.0)  # nearest fill: the edge value
    down = apply_affine_transform(ramp.transpose(0, 2, 1), transform_matrix(shift=(-0.5, 0)))
    np.testing.assert_allclose(down[:, :-1, :], ramp.transpose(0, 2, 1)[:, :-1, :] + 0.5)


def test_shear_moves_rows_sideways_per_channel() -> None:
    x = image((3, 7, 7))
    out = apply_affine_transform(
        x, transform_matrix(shear=np.pi / 4), order=0, fill_mode="constant", cval=0.0
    )
    expected = np.zeros_like(x)
    for row in range(7):  # a row below the centre (3) moves right by its distance to it
        offset = row - 3
        for col in range(7):
            if 0 <= col - offset < 7:
                expected[:, row, col] = x[:, row, col - offset]
    np.testing.assert_array_equal(out, expected)
    # the channels never mix: each channel alone gives the same result
    rng = np.random.default_rng(5)
    sheared = random_shear(x, 0.5, seed=rng)
    one_by_one = [random_shear(x[c : c + 1], 0.5, seed=np.random.default_rng(5)) for c in range(3)]
    np.testing.assert_allclose(sheared, np.concatenate(one_by_one))


def test_zoom_by_half_takes_every_other_pixel() -> None:
    x = image((2, 7, 7))
    out = apply_affine_transform(
        x, transform_matrix(zoom=(0.5, 0.5)), order=0, fill_mode="constant", cval=9.0
    )
    expected = np.full_like(x, 9.0)
    expected[:, 2:5, 2:5] = x[:, 1:6:2, 1:6:2]
    np.testing.assert_array_equal(out, expected)


def test_flips_are_reversed_axes_and_copies() -> None:
    x = image()
    original = x.copy()
    np.testing.assert_array_equal(horizontal_flip(x), x[..., ::-1])
    np.testing.assert_array_equal(vertical_flip(x), x[..., ::-1, :])
    np.testing.assert_array_equal(x, original)
    assert not np.shares_memory(horizontal_flip(x), x)


def test_random_functions_draw_within_their_ranges_and_repeat_with_a_seed() -> None:
    x = image((1, 6, 10))
    global_state = np.random.get_state()  # noqa: NPY002
    for seed in range(10):
        out = random_shift(x, 0.2, 0.5, fill_mode="wrap", seed=seed)
        rolls = [
            (rows, cols)
            for rows in range(-3, 4)
            for cols in range(-2, 3)
            if np.array_equal(out, np.roll(x, (rows, cols), axis=(1, 2)))
        ]
        assert rolls, f"seed {seed}: not a whole-pixel roll within the ranges"
    for transform in (
        lambda seed: random_rotation(x, 40, seed=seed),
        lambda seed: random_shear(x, 0.4, seed=seed),
        lambda seed: random_zoom(x, 0.3, seed=seed),
    ):
        np.testing.assert_array_equal(transform(3), transform(3))
        assert not np.array_equal(transform(3), transform(4))
        assert transform(3).shape == x.shape
    np.testing.assert_array_equal(random_rotation(x, 0), x)
    # NumPy's global random state is never touched
    after = np.random.get_state()  # noqa: NPY002
    assert global_state[0] == after[0]
    np.testing.assert_array_equal(global_state[1], after[1])


def test_transforms_keep_float_dtypes_and_make_integers_float32() -> None:
    for dtype, expected in (
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.uint8, np.float32),
    ):
        x = (np.arange(48) % 7).reshape(3, 4, 4).astype(dtype)
        assert random_rotation(x, 30, seed=0).dtype == expected
        assert random_shift(x, 0.3, 0.3, seed=0).dtype == expected
        datagen = plain_generator(rotation_range=10, samplewise_center=True, seed=0)
        assert datagen.random_transform(x).dtype == expected
        assert datagen.standardize(x).dtype == expected


# ------------------------------------------------------------------ the generator
def test_random_transform_with_nothing_to_do_returns_an_equal_copy() -> None:
    x = image()
    out = plain_generator(seed=0).random_transform(x)
    np.testing.assert_array_equal(out, x)
    assert not np.shares_memory(out, x)


def test_random_transform_shifts_by_whole_pixels_and_flips() -> None:
    x = image((2, 5, 10))
    datagen = plain_generator(width_shift_range=0.2, fill_mode="wrap", horizontal_flip=True, seed=1)
    seen_flip = seen_plain = False
    for _ in range(30):
        out = datagen.random_transform(x)
        for cols in range(-2, 3):
            rolled = np.roll(x, cols, axis=2)
            seen_plain |= np.array_equal(out, rolled)
            seen_flip |= np.array_equal(out, rolled[..., ::-1])
    assert seen_plain and seen_flip


def test_random_transform_and_standardize_leave_the_callers_array() -> None:
    x = image()
    original = x.copy()
    datagen = plain_generator(
        rotation_range=30, horizontal_flip=True, samplewise_center=True, seed=0
    )
    datagen.random_transform(x)
    out = datagen.standardize(x)
    np.testing.assert_array_equal(x, original)
    assert not np.shares_memory(out, x)


def test_featurewise_statistics_match_numpy_over_samples() -> None:
    X = image((20, 3, 4, 4)) * 3 + 1
    datagen = ImageDataGenerator()  # featurewise centring and scaling by default
    datagen.fit(X)
    assert datagen.mean is not None and datagen.std is not None
    np.testing.assert_allclose(datagen.mean, np.mean(X, axis=0))
    np.testing.assert_allclose(datagen.std, np.std(X, axis=0))
    expected = (X[3] - np.mean(X, axis=0)) / (np.std(X, axis=0) + 1e-7)
    np.testing.assert_allclose(datagen.standardize(X[3]), expected)


def test_samplewise_options_use_the_whole_sample() -> None:
    x = image((3, 4, 5)) * 2 + 5
    datagen = plain_generator(samplewise_center=True, samplewise_std_normalization=True)
    np.testing.assert_allclose(datagen.standardize(x), (x - x.mean()) / (x.std() + 1e-7))


def test_zca_whitened_training_data_has_identity_covariance() -> None:
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    mixing = rotation * np.linspace(1.0, 3.0, 12)  # correlated features, well conditioned
    X = (rng.standard_normal((300, 12)) @ mixing).reshape(300, 3, 2, 2) + 4
    datagen = ImageDataGenerator(featurewise_std_normalization=False, zca_whitening=True)
    datagen.fit(X)
    white = np.stack([datagen.standardize(x) for x in X]).reshape(300, 12)
    np.testing.assert_allclose(white.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(white.T @ white / len(white), np.eye(12), atol=1e-4)


def test_fit_with_augment_measures_transformed_arrays() -> None:
    x = image((1, 3, 4))
    X = np.repeat(x[None], 5, axis=0)
    datagen = ImageDataGenerator(featurewise_std_normalization=False, horizontal_flip=True)
    datagen.fit(X, augment=True, rounds=8, seed=2)
    assert datagen.mean is not None
    # every augmented copy is x or its mirror: the mean lies between them
    mirror = x[..., ::-1]
    share = (datagen.mean[0, 0, 0] - x[0, 0, 0]) / (mirror[0, 0, 0] - x[0, 0, 0])
    assert 0 < share < 1
    np.testing.assert_allclose(datagen.mean, (1 - share) * x + share * mirror)
    again = ImageDataGenerator(featurewise_std_normalization=False, horizontal_flip=True)
    again.fit(X, augment=True, rounds=8, seed=2)
    np.testing.assert_array_equal(again.mean, datagen.mean)


# ------------------------------------------------------------------ batches
def test_flow_yields_every_sample_once_per_pass_with_a_partial_last_batch() -> None:
    X = image((10, 1, 3, 3))
    batches = plain_generator(seed=0).flow(X, np.arange(10), batch_size=4, shuffle=True)
    orders = []
    for _ in range(3):  # three passes
        sizes, labels = [], []
        for _ in range(3):
            batch_X, batch_y = next(batches)
            sizes.append(len(batch_X))
            labels.extend(batch_y.tolist())
            np.testing.assert_array_equal(batch_X, X[batch_y])
        assert sizes == [4, 4, 2]
        assert sorted(labels) == list(range(10))
        orders.append(labels)
    assert orders[0] != orders[1] or orders[1] != orders[2]  # reshuffled each pass


def test_flow_without_shuffle_keeps_order_and_y_none_gives_images() -> None:
    X = image((5, 2, 3, 3), dtype=np.float32)
    batches = plain_generator().flow(X, batch_size=2)
    got = [next(batches) for _ in range(4)]
    assert all(isinstance(batch, np.ndarray) for batch in got)
    np.testing.assert_array_equal(np.concatenate(got[:3]), X)
    np.testing.assert_array_equal(got[3], X[:2])
    assert got[0].dtype == np.float32
    assert iter(batches) is batches
    np.testing.assert_array_equal(batches.next(), X[2:4])  # old scripts' spelling


def test_two_flows_are_independent() -> None:
    datagen = plain_generator()
    X = image((8, 1, 2, 2))
    first = datagen.flow(X, np.arange(8), batch_size=3)
    assert next(first)[1].tolist() == [0, 1, 2]
    second = datagen.flow(X[:4], np.arange(4), batch_size=2)
    assert isinstance(second, NumpyArrayIterator) and second is not first
    assert next(second)[1].tolist() == [0, 1]
    assert next(first)[1].tolist() == [3, 4, 5]
    assert next(second)[1].tolist() == [2, 3]


def test_the_same_seed_gives_the_same_batches() -> None:
    X = image((12, 2, 5, 5))
    datagen = plain_generator(rotation_range=30, width_shift_range=0.2, horizontal_flip=True)

    def batches(seed: int) -> list[tuple[Any, Any]]:
        flow = datagen.flow(X, np.arange(12), batch_size=5, shuffle=True, seed=seed)
        return [next(flow) for _ in range(4)]

    state = np.random.get_state()  # noqa: NPY002
    first, again, other = batches(7), batches(7), batches(8)
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    np.testing.assert_array_equal(np.random.get_state()[1], state[1])  # noqa: NPY002


def test_threads_pulling_from_one_iterator_see_each_index_once_per_pass() -> None:
    X = np.zeros((48, 1, 2, 2), dtype=np.float32)
    batches = plain_generator(horizontal_flip=True).flow(
        X, np.arange(48), batch_size=4, shuffle=True, seed=0
    )
    seen: list[int] = []
    seen_lock = threading.Lock()

    def pull() -> None:
        for _ in range(6):
            _, labels = next(batches)
            with seen_lock:
                seen.extend(labels.tolist())

    run_interleaved([pull] * 4)
    assert len(seen) == 96
    assert np.array_equal(np.bincount(seen, minlength=48), np.full(48, 2))


def test_flow_standardizes_with_fitted_statistics_and_batches_exceeding_data() -> None:
    X = image((3, 1, 2, 2)) * 4 + 2
    datagen = ImageDataGenerator()
    datagen.fit(X)
    batch_X, batch_y = next(datagen.flow(X, [10, 11, 12], batch_size=8))
    assert batch_y.tolist() == [10, 11, 12]
    np.testing.assert_allclose(batch_X, (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-7))


# ------------------------------------------------------------------ errors
def test_errors_name_the_caller_and_what_it_received() -> None:
    X = image((4, 1, 3, 3))
    with pytest.raises(ValueError, match=r"ImageDataGenerator.fit.*received shape \(4, 3, 3\)"):
        ImageDataGenerator().fit(X[:, 0])
    with pytest.raises(ValueError, match=r"ImageDataGenerator.flow.*received shape \(3, 3\)"):
        plain_generator().flow(X[0, 0], None)
    with pytest.raises(ValueError, match="ImageDataGenerator.flow.*4 images and 3 labels"):
        plain_generator().flow(X, np.arange(3))
    for bad in (0, -2, 2.5, True):
        with pytest.raises((ValueError, TypeError), match=f"batch_size.*received {bad!r}"):
            plain_generator().flow(X, batch_size=bad)  # type: ignore[arg-type]
    for name in ("rotation_range", "width_shift_range", "height_shift_range", "shear_range"):
        with pytest.raises(ValueError, match=f"ImageDataGenerator: {name}.*received -1"):
            ImageDataGenerator(**{name: -1})
    with pytest.raises(ValueError, match="ImageDataGenerator: fill_mode.*received 'mirror'"):
        ImageDataGenerator(fill_mode="mirror")
    with pytest.raises(ValueError, match="apply_affine_transform: fill_mode.*'edge'"):
        apply_affine_transform(X[0], np.eye(3), fill_mode="edge")
    with pytest.raises(ValueError, match="apply_affine_transform: order.*received 3"):
        apply_affine_transform(X[0], np.eye(3), order=3)
    with pytest.raises(ValueError, match=r"apply_affine_transform.*matrix.*\(4, 4\)"):
        apply_affine_transform(X[0], np.eye(4))
    with pytest.raises(ValueError, match="random_shift: wrg.*received -0.1"):
        random_shift(X[0], -0.1, 0)
    with pytest.raises(ValueError, match="random_zoom: rg must be below 1"):
        random_zoom(X[0], 1.0)
    for option in ("featurewise_center", "featurewise_std_normalization", "zca_whitening"):
        datagen = plain_generator(**{option: True})
        with pytest.raises(RuntimeError, match=rf"{option}.*call fit\(X\) first"):
            datagen.standardize(X[0])
        with pytest.raises(RuntimeError, match=r"call fit\(X\) first"):
            next(datagen.flow(X))
    fitted = ImageDataGenerator()
    fitted.fit(X)
    with pytest.raises(ValueError, match=r"shape \(1, 2, 2\).*shape \(1, 3, 3\)"):
        fitted.standardize(np.zeros((1, 2, 2)))
    whitening = plain_generator(zca_whitening=True)
    whitening.fit(X)
    with pytest.raises(ValueError, match="image of 4 values.*images of 9 values"):
        whitening.standardize(np.zeros((1, 2, 2)))
    with pytest.raises(
        ValueError, match=r"ImageDataGenerator.standardize.*received shape \(3, 3\)"
    ):
        fitted.standardize(X[0, 0])
    with pytest.raises(ValueError, match="ImageDataGenerator.fit: rounds.*received 0"):
        fitted.fit(X, augment=True, rounds=0)


def test_pillow_is_named_when_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match="array_to_img needs Pillow.*pip install pillow"):
        array_to_img(np.zeros((3, 2, 2)))
    with pytest.raises(ImportError, match="load_img needs Pillow.*pip install pillow"):
        load_img(tmp_path / "missing.png")
    with pytest.raises(ImportError, match=r"save_to_dir.*pip install pillow"):
        plain_generator().flow(np.zeros((2, 3, 2, 2)), save_to_dir=str(tmp_path))


def test_list_pictures_and_img_to_array(tmp_path: Path) -> None:
    for name in ("b.PNG", "a.jpg", "notes.txt", "c.jpeg.bak"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "d.bmp").mkdir()
    assert list_pictures(tmp_path) == [str(tmp_path / "a.jpg"), str(tmp_path / "b.PNG")]
    assert list_pictures(tmp_path, ext="txt") == [str(tmp_path / "notes.txt")]
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    np.testing.assert_array_equal(img_to_array(pixels), pixels.transpose(2, 0, 1))
    assert img_to_array(pixels[..., 0]).shape == (1, 2, 4)
    assert img_to_array(pixels).dtype == np.float32


def test_image_files_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    x = np.arange(3 * 4 * 5, dtype=np.float64).reshape(3, 4, 5)
    original = x.copy()
    img = array_to_img(x, scale=False)
    np.testing.assert_array_equal(img_to_array(img), x)
    np.testing.assert_array_equal(x, original)
    scaled = img_to_array(array_to_img(x - 10))
    assert scaled.min() == 0 and scaled.max() == 255
    img.save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(img_to_array(load_img(tmp_path / "rgb.png")), x)
    assert img_to_array(load_img(tmp_path / "rgb.png", grayscale=True)).shape == (1, 4, 5)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    batches = plain_generator().flow(
        np.stack([x, x]),
        [0, 1],
        batch_size=1,
        save_to_dir=str(out_dir),
        save_prefix="aug",
        save_format="png",
    )
    next(batches)
    next(batches)
    assert sorted(path.name for path in out_dir.iterdir()) == ["aug_0.png", "aug_1.png"]
