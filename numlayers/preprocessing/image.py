"""Real-time augmentation of image batches, as Keras 0.3's ``keras.preprocessing.image``.

Images are channels-first arrays: one image is ``(channels, rows, cols)``, a set of them
``(samples, channels, rows, cols)``. :class:`ImageDataGenerator` standardizes images
(centring, scaling, ZCA whitening) and augments them at random (rotations, shifts,
shears, flips); its :meth:`~ImageDataGenerator.flow` returns a :class:`NumpyArrayIterator`
that loops over arrays in batches, for ``fit_generator``.

The geometric transforms are written with NumPy alone: :func:`apply_affine_transform`
maps every channel of an image through one 2-D affine map about the image centre, with
nearest (``order=0``) or bilinear (``order=1``) interpolation, and fills the pixels that
come from outside the image by ``fill_mode``: ``"nearest"`` (the edge pixel),
``"constant"`` (``cval``), ``"reflect"`` (the image mirrored about its edge,
``d c b a | a b c d | d c b a``) or ``"wrap"`` (the image repeated, as ``np.roll``).

Random draws come from ``numpy.random.Generator`` objects, never from NumPy's global
state. A ``seed`` argument is an int, a Generator, or None (numlayers' own generator,
which :func:`numlayers.random.set_seed` makes reproducible). Pillow is needed only to read
and write image files (:func:`load_img`, :func:`array_to_img`, ``flow(save_to_dir=...)``).
"""

from __future__ import annotations

import math
import os
import re
import threading
from typing import Any

import numpy as np

from numlayers.random import get_generator

__all__ = [
    "ImageDataGenerator",
    "NumpyArrayIterator",
    "apply_affine_transform",
    "array_to_img",
    "horizontal_flip",
    "img_to_array",
    "list_pictures",
    "load_img",
    "random_rotation",
    "random_shear",
    "random_shift",
    "random_zoom",
    "transform_matrix",
    "vertical_flip",
]

FILL_MODES = ("nearest", "constant", "reflect", "wrap")

#: added to a standard deviation before dividing by it
_EPSILON = 1e-7
#: added to the covariance's eigenvalues before ZCA whitening divides by their roots
_ZCA_EPSILON = 1e-6


# ------------------------------------------------------------------ argument checks
def _float_dtype(array: np.ndarray) -> np.dtype:
    """The dtype a transformed copy of ``array`` gets: its own if floating, else float32."""
    return array.dtype if np.issubdtype(array.dtype, np.floating) else np.dtype(np.float32)


def _as_image(x: Any, where: str) -> np.ndarray:
    image = np.asarray(x)
    if image.ndim != 3:
        raise ValueError(
            f"{where} expects one image of shape (channels, rows, cols), received shape "
            f"{image.shape}"
        )
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == np.bool_):
        raise TypeError(f"{where} expects a numeric image, received dtype {image.dtype}")
    return image


def _as_images(X: Any, where: str) -> np.ndarray:
    images = np.asarray(X)
    if images.ndim != 4:
        raise ValueError(
            f"{where} expects X of shape (samples, channels, rows, cols), received shape "
            f"{images.shape}"
        )
    if not (np.issubdtype(images.dtype, np.number) or images.dtype == np.bool_):
        raise TypeError(f"{where} expects numeric images, received dtype {images.dtype}")
    if len(images) == 0:
        raise ValueError(f"{where} needs at least one sample, received X of shape {images.shape}")
    return images


def _check_range(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{where}: {name} must be a number, received {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: {name} must be a finite number >= 0, received {value!r}")
    return float(value)


def _check_fill(fill_mode: Any, cval: Any, where: str) -> float:
    if fill_mode not in FILL_MODES:
        raise ValueError(
            f"{where}: fill_mode must be one of {', '.join(map(repr, FILL_MODES))}, received "
            f"{fill_mode!r}"
        )
    if isinstance(cval, bool) or not isinstance(cval, int | float | np.integer | np.floating):
        raise TypeError(f"{where}: cval must be a number, received {cval!r}")
    return float(cval)


def _check_order(order: Any, where: str) -> int:
    if isinstance(order, bool) or order not in (0, 1):
        raise ValueError(f"{where}: order must be 0 (nearest) or 1 (bilinear), received {order!r}")
    return int(order)


def _generator(seed: Any, where: str) -> np.random.Generator:
    try:
        return get_generator(seed)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def _pillow(where: str) -> Any:
    """PIL's ``Image`` module, or an ImportError that says who needs it."""
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError(
            f"{where} needs Pillow to read and write image files: pip install pillow"
        ) from error
    return Image


# ------------------------------------------------------------------ affine transforms
def transform_matrix(
    rotation: float = 0.0,
    shift: tuple[float, float] = (0.0, 0.0),
    shear: float = 0.0,
    zoom: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """The 3x3 matrix that :func:`apply_affine_transform` takes for a transform that
    scales an image's content by ``zoom = (rows, cols)``, shears it by ``shear`` radians,
    rotates it by ``rotation`` degrees and moves it by ``shift = (rows, cols)`` pixels, in
    that order, about the image centre.

    The matrix maps an output pixel's position to the input position it is read from,
    both as ``(row, col, 1)`` relative to the centre. A positive rotation turns the
    content counter-clockwise as displayed (row 0 at the top): by 90 degrees it is
    ``np.rot90`` of each channel. A positive shear tilts vertical lines counter-clockwise
    (rows below the centre move right). A positive shift moves the content down and right.
    A zoom below 1 shrinks the content.

    Example:
        >>> transform_matrix(shift=(2, -1))
        array([[ 1.,  0., -2.],
               [ 0.,  1.,  1.],
               [ 0.,  0.,  1.]])
    """
    if len(shift) != 2 or len(zoom) != 2:
        raise ValueError(
            f"transform_matrix: shift and zoom are (rows, cols) pairs, received shift={shift!r}"
            f", zoom={zoom!r}"
        )
    values = [rotation, shear, *shift, *zoom]
    if not all(math.isfinite(float(value)) for value in values):
        raise ValueError(f"transform_matrix expects finite numbers, received {values!r}")
    if zoom[0] <= 0 or zoom[1] <= 0:
        raise ValueError(f"transform_matrix: zoom factors must be > 0, received {zoom!r}")
    angle = math.radians(rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    # each factor undoes one step, last step first
    undo_shift = np.array([[1.0, 0.0, -shift[0]], [0.0, 1.0, -shift[1]], [0.0, 0.0, 1.0]])
    undo_rotation = np.array([[cos, sin, 0.0], [-sin, cos, 0.0], [0.0, 0.0, 1.0]])
    undo_shear = np.array([[1.0, 0.0, 0.0], [-math.tan(shear), 1.0, 0.0], [0.0, 0.0, 1.0]])
    undo_zoom = np.diag([1.0 / zoom[0], 1.0 / zoom[1], 1.0])
    return undo_zoom @ undo_shear @ undo_rotation @ undo_shift


def _fold(index: np.ndarray, size: int, fill_mode: str) -> np.ndarray:
    """Indices outside ``0 .. size - 1`` brought inside as ``fill_mode`` reads them."""
    if fill_mode == "wrap":
        return np.mod(index, size)
    if fill_mode == "reflect":
        index = np.mod(index, 2 * size)
        return np.where(index >= size, 2 * size - 1 - index, index)
    return np.clip(index, 0, size - 1)  # "nearest", and "constant" before masking


def _gather(
    image: np.ndarray, rows: np.ndarray, cols: np.ndarray, fill_mode: str, cval: float
) -> np.ndarray:
    """``image[:, rows, cols]`` for integer positions that may lie outside the image."""
    height, width = image.shape[1:]
    flat = _fold(rows, height, fill_mode) * width + _fold(cols, width, fill_mode)
    values = np.take(image.reshape(len(image), -1), flat, axis=1)
    if fill_mode == "constant":
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        values = np.where(inside, values, np.asarray(cval, dtype=image.dtype))
    return values


def _snap(coordinates: np.ndarray) -> np.ndarray:
    """Coordinates within rounding error of a whole pixel set to it (a rotation by 90
    degrees then reads whole pixels, as it should)."""
    nearest = np.round(coordinates)
    return np.where(np.abs(coordinates - nearest) < 1e-9, nearest, coordinates)


def _source(
    coefficients: np.ndarray, constant: float, out_rows: np.ndarray, out_cols: np.ndarray
) -> np.ndarray:
    """One source coordinate of every output pixel, ``(rows, 1)`` or ``(1, cols)`` when
    it depends on one output axis only (a shift or a zoom), so that the work after it
    runs on a row or a column instead of the whole grid."""
    source = np.full((1, 1), constant)
    if coefficients[0] != 0:
        source = source + coefficients[0] * out_rows
    if coefficients[1] != 0:
        source = source + coefficients[1] * out_cols
    return source


def _full(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``values`` spread to ``shape`` (a matrix that ignores an axis reads one row or
    column for all of them)."""
    return values if values.shape == shape else np.broadcast_to(values, shape).copy()


def apply_affine_transform(
    x: Any,
    matrix: Any,
    order: int = 1,
    fill_mode: str = "nearest",
    cval: float = 0.0,
) -> np.ndarray:
    """A new image: every channel of the image ``x`` ``(channels, rows, cols)`` mapped
    through the affine ``matrix`` (3x3, 2x3 or 2x2, as :func:`transform_matrix` builds
    it: output position to input position, ``(row, col)`` about the image centre).

    ``order`` 0 reads the nearest pixel, 1 interpolates bilinearly; positions outside the
    image are read as ``fill_mode`` says (``"nearest"``, ``"constant"`` with ``cval``,
    ``"reflect"``, ``"wrap"``). The result keeps a floating ``x``'s dtype (float32
    otherwise).

    Example:
        >>> x = np.arange(9.0).reshape(1, 3, 3)
        >>> apply_affine_transform(x, transform_matrix(rotation=90), order=0)[0]
        array([[2., 5., 8.],
               [1., 4., 7.],
               [0., 3., 6.]])
    """
    where = "apply_affine_transform"
    image = _as_image(x, where)
    image = image.astype(_float_dtype(image), copy=False)
    order = _check_order(order, where)
    cval = _check_fill(fill_mode, cval, where)
    affine = np.asarray(matrix, dtype=np.float64)
    if affine.shape not in ((2, 2), (2, 3), (3, 3)) or not np.all(np.isfinite(affine)):
        raise ValueError(
            f"{where} expects a finite 3x3, 2x3 or 2x2 matrix, received shape {affine.shape}"
        )
    linear = affine[:2, :2]
    offset = affine[:2, 2] if affine.shape[1] == 3 else np.zeros(2)
    height, width = image.shape[1:]
    centre_row, centre_col = (height - 1) / 2.0, (width - 1) / 2.0
    out_rows = (np.arange(height) - centre_row)[:, None]
    out_cols = (np.arange(width) - centre_col)[None, :]
    src_rows = _source(linear[0], offset[0] + centre_row, out_rows, out_cols)
    src_cols = _source(linear[1], offset[1] + centre_col, out_rows, out_cols)
    if order == 0:
        rows = np.floor(src_rows + 0.5).astype(np.intp)
        cols = np.floor(src_cols + 0.5).astype(np.intp)
        return _full(_gather(image, rows, cols, fill_mode, cval), image.shape)
    src_rows, src_cols = _snap(src_rows), _snap(src_cols)
    top, left = np.floor(src_rows), np.floor(src_cols)
    down = (src_rows - top).astype(image.dtype)  # weight of the lower neighbour
    right = (src_cols - left).astype(image.dtype)  # weight of the right neighbour
    top_i, left_i = top.astype(np.intp), left.astype(np.intp)

    def row_mix(rows: np.ndarray) -> np.ndarray:
        left_values = _gather(image, rows, left_i, fill_mode, cval)
        right_values = _gather(image, rows, left_i + 1, fill_mode, cval)
        return (1 - right) * left_values + right * right_values

    return _full((1 - down) * row_mix(top_i) + down * row_mix(top_i + 1), image.shape)


def random_rotation(
    x: Any,
    rg: float,
    fill_mode: str = "nearest",
    cval: float = 0.0,
    *,
    order: int = 1,
    seed: Any = None,
) -> np.ndarray:
    """The image ``x`` ``(channels, rows, cols)`` rotated by an angle drawn uniformly from
    ``-rg .. rg`` degrees (positive: counter-clockwise), as a new array.

    Example:
        >>> random_rotation(np.ones((1, 4, 4)), 30, seed=0).shape
        (1, 4, 4)
    """
    rg = _check_range(rg, "rg", "random_rotation")
    angle = _generator(seed, "random_rotation").uniform(-rg, rg) if rg else 0.0
    return apply_affine_transform(x, transform_matrix(rotation=angle), order, fill_mode, cval)


def random_shift(
    x: Any,
    wrg: float,
    hrg: float,
    fill_mode: str = "nearest",
    cval: float = 0.0,
    *,
    order: int = 0,
    seed: Any = None,
) -> np.ndarray:
    """The image ``x`` ``(channels, rows, cols)`` moved sideways by a share of its width
    drawn uniformly from ``-wrg .. wrg`` and up or down by a share of its height drawn
    from ``-hrg .. hrg``, as a new array (``order=0``: whole pixels, as Keras did).

    Example:
        >>> x = np.arange(4.0).reshape(1, 1, 4)
        >>> random_shift(x, 0, 0, seed=0)
        array([[[0., 1., 2., 3.]]])
    """
    wrg = _check_range(wrg, "wrg", "random_shift")
    hrg = _check_range(hrg, "hrg", "random_shift")
    rng = _generator(seed, "random_shift")
    rows, cols = np.shape(x)[-2:]
    shift_rows = rng.uniform(-hrg, hrg) * rows if hrg else 0.0
    shift_cols = rng.uniform(-wrg, wrg) * cols if wrg else 0.0
    matrix = transform_matrix(shift=(shift_rows, shift_cols))
    return apply_affine_transform(x, matrix, order, fill_mode, cval)


def random_shear(
    x: Any,
    intensity: float,
    fill_mode: str = "nearest",
    cval: float = 0.0,
    *,
    order: int = 1,
    seed: Any = None,
) -> np.ndarray:
    """The image ``x`` ``(channels, rows, cols)`` sheared by an angle drawn uniformly from
    ``-intensity .. intensity`` radians, each channel alike, as a new array.

    Example:
        >>> random_shear(np.ones((3, 5, 5)), 0.3, seed=0).shape
        (3, 5, 5)
    """
    intensity = _check_range(intensity, "intensity", "random_shear")
    angle = _generator(seed, "random_shear").uniform(-intensity, intensity) if intensity else 0.0
    return apply_affine_transform(x, transform_matrix(shear=angle), order, fill_mode, cval)


def random_zoom(
    x: Any,
    rg: float,
    fill_mode: str = "nearest",
    cval: float = 0.0,
    *,
    order: int = 1,
    seed: Any = None,
) -> np.ndarray:
    """The image ``x`` ``(channels, rows, cols)`` with its content scaled about the centre
    by factors drawn uniformly from ``1 - rg .. 1`` for rows and for columns (``rg`` below
    1), as a new array of the same shape.

    Example:
        >>> random_zoom(np.ones((1, 6, 6)), 0.2, seed=0).shape
        (1, 6, 6)
    """
    rg = _check_range(rg, "rg", "random_zoom")
    if rg >= 1:
        raise ValueError(f"random_zoom: rg must be below 1, received {rg!r}")
    factors = _generator(seed, "random_zoom").uniform(1 - rg, 1, size=2) if rg else (1.0, 1.0)
    matrix = transform_matrix(zoom=(float(factors[0]), float(factors[1])))
    return apply_affine_transform(x, matrix, order, fill_mode, cval)


def horizontal_flip(x: Any) -> np.ndarray:
    """A copy of the image ``x`` ``(channels, rows, cols)`` mirrored left to right.

    Example:
        >>> horizontal_flip(np.array([[[1, 2, 3]]]))
        array([[[3, 2, 1]]])
    """
    return _as_image(x, "horizontal_flip")[:, :, ::-1].copy()


def vertical_flip(x: Any) -> np.ndarray:
    """A copy of the image ``x`` ``(channels, rows, cols)`` mirrored top to bottom.

    Example:
        >>> vertical_flip(np.array([[[1], [2], [3]]]))[0, :, 0]
        array([3, 2, 1])
    """
    return _as_image(x, "vertical_flip")[:, ::-1, :].copy()


# ------------------------------------------------------------------ image files
def array_to_img(x: Any, scale: bool = True) -> Any:
    """A Pillow image (RGB for 3 channels, grayscale for 1) of the array ``x``
    ``(channels, rows, cols)``. ``scale`` maps its values onto 0 .. 255 (negative values
    first lifted to 0, then divided by the largest); otherwise they are rounded and
    clipped to 0 .. 255. ``x`` is left as it was. Needs Pillow.

    Example:
        >>> array_to_img(np.zeros((3, 4, 5))).size  # doctest: +SKIP
        (5, 4)
    """
    Image = _pillow("array_to_img")
    pixels = np.array(_as_image(x, "array_to_img"), dtype=np.float64)
    if pixels.shape[0] not in (1, 3):
        raise ValueError(
            f"array_to_img expects 1 (grayscale) or 3 (RGB) channels, received shape {pixels.shape}"
        )
    if scale:
        pixels -= min(float(pixels.min()), 0.0)
        largest = float(pixels.max())
        if largest > 0:
            pixels *= 255.0 / largest
    pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    if pixels.shape[0] == 1:
        return Image.fromarray(pixels[0])
    return Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))


def img_to_array(img: Any) -> np.ndarray:
    """A float32 array ``(channels, rows, cols)`` of a Pillow image (or of an array
    ``(rows, cols)`` or ``(rows, cols, channels)``).

    Example:
        >>> img_to_array(np.zeros((4, 5, 3), dtype=np.uint8)).shape
        (3, 4, 5)
        >>> img_to_array(np.zeros((4, 5))).shape
        (1, 4, 5)
    """
    pixels = np.asarray(img, dtype=np.float32)
    if pixels.ndim == 2:
        return pixels[None, :, :].copy()
    if pixels.ndim == 3:
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))
    raise ValueError(
        f"img_to_array expects an image of shape (rows, cols) or (rows, cols, channels), "
        f"received shape {pixels.shape}"
    )


def load_img(path: str | os.PathLike[str], grayscale: bool = False) -> Any:
    """The image file at ``path`` as a Pillow image, converted to grayscale or to RGB
    (so a grayscale file still gives 3 channels). Needs Pillow.

    Example:
        >>> img_to_array(load_img("photo.jpg")).shape  # doctest: +SKIP
        (3, 32, 32)
    """
    Image = _pillow("load_img")
    img = Image.open(path)
    return img.convert("L" if grayscale else "RGB")


def list_pictures(directory: str | os.PathLike[str], ext: str = "jpg|jpeg|bmp|png") -> list[str]:
    """The paths of the files in ``directory`` (not its subfolders) whose name ends with
    one of the extensions ``ext`` (``|``-separated, any case), sorted by name.

    Example:
        >>> import os, tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     for name in ("a.png", "b.txt", "c.JPG"):
        ...         open(os.path.join(folder, name), "w").close()
        ...     [os.path.basename(path) for path in list_pictures(folder)]
        ['a.png', 'c.JPG']
    """
    pattern = re.compile(rf".+\.(?:{ext})", re.IGNORECASE)
    return [
        os.path.join(directory, name)
        for name in sorted(os.listdir(directory))
        if os.path.isfile(os.path.join(directory, name)) and pattern.fullmatch(name)
    ]


# ------------------------------------------------------------------ the generator
class ImageDataGenerator:
    """Standardizes images and augments them at random, in batches from :meth:`flow`.

    Args:
        featurewise_center: subtract the mean image of the data given to :meth:`fit`.
        samplewise_center: subtract each image's own mean.
        featurewise_std_normalization: divide by the data's standard deviation (per
            pixel and channel, as :meth:`fit` measures it).
        samplewise_std_normalization: divide each image by its own standard deviation.
        zca_whitening: decorrelate the pixels with the ZCA matrix :meth:`fit` computes.
        rotation_range: rotate by up to this many degrees either way.
        width_shift_range: move sideways by up to this share of the width.
        height_shift_range: move up or down by up to this share of the height.
        shear_range: shear by up to this many radians either way.
        horizontal_flip: mirror left to right half of the time.
        vertical_flip: mirror top to bottom half of the time.
        fill_mode: how pixels from outside the image are read: ``"nearest"``,
            ``"constant"``, ``"reflect"`` or ``"wrap"``.
        cval: the value of those pixels for ``fill_mode="constant"``.
        seed: the random draws of :meth:`random_transform` and of iterators given no
            seed: an int, a ``numpy.random.Generator``, or None (numlayers' generator).

    The featurewise options and ZCA whitening need :meth:`fit` first. Images are
    ``(channels, rows, cols)``; data sets ``(samples, channels, rows, cols)``.

    Example:
        >>> datagen = ImageDataGenerator(featurewise_center=False,
        ...     featurewise_std_normalization=False, horizontal_flip=True, seed=0)
        >>> X = np.zeros((10, 3, 8, 8), dtype=np.float32)
        >>> batches = datagen.flow(X, np.arange(10), batch_size=4)
        >>> batch_X, batch_y = next(batches)
        >>> batch_X.shape, batch_X.dtype, batch_y
        ((4, 3, 8, 8), dtype('float32'), array([0, 1, 2, 3]))
    """

    def __init__(
        self,
        featurewise_center: bool = True,
        samplewise_center: bool = False,
        featurewise_std_normalization: bool = True,
        samplewise_std_normalization: bool = False,
        zca_whitening: bool = False,
        rotation_range: float = 0.0,
        width_shift_range: float = 0.0,
        height_shift_range: float = 0.0,
        shear_range: float = 0.0,
        horizontal_flip: bool = False,
        vertical_flip: bool = False,
        fill_mode: str = "nearest",
        cval: float = 0.0,
        seed: Any = None,
    ) -> None:
        where = "ImageDataGenerator"
        self.featurewise_center = bool(featurewise_center)
        self.samplewise_center = bool(samplewise_center)
        self.featurewise_std_normalization = bool(featurewise_std_normalization)
        self.samplewise_std_normalization = bool(samplewise_std_normalization)
        self.zca_whitening = bool(zca_whitening)
        self.rotation_range = _check_range(rotation_range, "rotation_range", where)
        self.width_shift_range = _check_range(width_shift_range, "width_shift_range", where)
        self.height_shift_range = _check_range(height_shift_range, "height_shift_range", where)
        self.shear_range = _check_range(shear_range, "shear_range", where)
        self.horizontal_flip = bool(horizontal_flip)
        self.vertical_flip = bool(vertical_flip)
        self.cval = _check_fill(fill_mode, cval, where)
        self.fill_mode = fill_mode
        self._rng = _generator(seed, where)
        #: what :meth:`fit` measures: the mean and standard deviation images, and the
        #: ZCA matrix (features x features)
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.principal_components: np.ndarray | None = None

    def __repr__(self) -> str:
        return (
            f"<ImageDataGenerator rotation_range={self.rotation_range} "
            f"width_shift_range={self.width_shift_range} "
            f"height_shift_range={self.height_shift_range} shear_range={self.shear_range} "
            f"horizontal_flip={self.horizontal_flip} vertical_flip={self.vertical_flip}>"
        )

    def _needs_fit(self) -> bool:
        return self.featurewise_center or self.featurewise_std_normalization or self.zca_whitening

    # -------------------------------------------------------------- fit
    def fit(self, X: Any, augment: bool = False, rounds: int = 1, seed: Any = None) -> None:
        """Measure what the featurewise options and ZCA whitening need on the data ``X``
        ``(samples, channels, rows, cols)``: the mean image, the standard deviation image
        and the ZCA matrix, of the data as :meth:`standardize` sees it (after the
        samplewise steps). With ``augment``, measure on ``rounds`` randomly transformed
        copies of ``X`` instead, drawn from ``seed`` (by default the generator's own).

        Example:
            >>> datagen = ImageDataGenerator()
            >>> datagen.fit(np.array([1.0, 3.0]).reshape(2, 1, 1, 1))
            >>> datagen.mean, datagen.std
            (array([[[2.]]]), array([[[1.]]]))
        """
        where = "ImageDataGenerator.fit"
        images = _as_images(X, where)
        if isinstance(rounds, bool) or not isinstance(rounds, int | np.integer) or rounds < 1:
            raise ValueError(f"{where}: rounds must be an int >= 1, received {rounds!r}")
        if not self._needs_fit():
            return
        dtype = _float_dtype(images)
        if augment:
            rng = self._rng if seed is None else _generator(seed, where)
            data = np.empty((int(rounds) * len(images), *images.shape[1:]), dtype=dtype)
            for position in range(len(data)):
                data[position] = self.random_transform(images[position % len(images)], rng)
        else:
            data = images.astype(dtype, copy=True)
        axes = (1, 2, 3)
        if self.samplewise_center:
            data -= data.mean(axis=axes, keepdims=True)
        if self.samplewise_std_normalization:
            data /= data.std(axis=axes, keepdims=True) + _EPSILON
        if self.featurewise_center:
            self.mean = data.mean(axis=0, dtype=np.float64)
            data -= self.mean
        if self.featurewise_std_normalization:
            self.std = data.std(axis=0, dtype=np.float64)
            data /= self.std + _EPSILON
        if self.zca_whitening:
            flat = data.reshape(len(data), -1).astype(np.float64)
            covariance = flat.T @ flat / len(flat)
            vectors, values, _ = np.linalg.svd(covariance)
            self.principal_components = (vectors / np.sqrt(values + _ZCA_EPSILON)) @ vectors.T

    # -------------------------------------------------------------- one sample
    def _fitted(self, value: np.ndarray | None, option: str, image: np.ndarray) -> np.ndarray:
        if value is None:
            raise RuntimeError(
                f"ImageDataGenerator.standardize: {option} needs statistics of the data: "
                "call fit(X) first"
            )
        if option == "zca_whitening" and value.shape != (image.size, image.size):
            raise ValueError(
                f"ImageDataGenerator.standardize: received an image of {image.size} values, "
                f"but fit(X) saw images of {value.shape[0]} values"
            )
        if option != "zca_whitening" and value.shape != image.shape:
            raise ValueError(
                f"ImageDataGenerator.standardize: received an image of shape {image.shape}, "
                f"but fit(X) saw images of shape {value.shape}"
            )
        return value

    def standardize(self, x: Any) -> np.ndarray:
        """A standardized copy of the image ``x`` ``(channels, rows, cols)``: samplewise
        centring and scaling (over the whole image), then featurewise centring and
        scaling, then ZCA whitening, as the generator's options say.

        Example:
            >>> datagen = ImageDataGenerator(featurewise_center=False,
            ...     featurewise_std_normalization=False, samplewise_center=True)
            >>> datagen.standardize(np.array([[[1.0, 3.0]], [[5.0, 7.0]]]))
            array([[[-3., -1.]],
            <BLANKLINE>
                   [[ 1.,  3.]]])
        """
        image = _as_image(x, "ImageDataGenerator.standardize")
        out = np.array(image, dtype=_float_dtype(image))
        if self.samplewise_center:
            out -= out.mean()
        if self.samplewise_std_normalization:
            out /= out.std() + _EPSILON
        if self.featurewise_center:
            out -= self._fitted(self.mean, "featurewise_center", out)
        if self.featurewise_std_normalization:
            out /= self._fitted(self.std, "featurewise_std_normalization", out) + _EPSILON
        if self.zca_whitening:
            components = self._fitted(self.principal_components, "zca_whitening", out)
            out = (out.reshape(-1) @ components).reshape(out.shape).astype(out.dtype)
        return out

    def random_transform(self, x: Any, seed: Any = None) -> np.ndarray:
        """A randomly augmented copy of the image ``x`` ``(channels, rows, cols)``: one
        affine map (shear, then rotation, then shift, each drawn within its range) read
        with bilinear interpolation, or whole pixels when it only shifts; then the flips.
        ``seed`` (an int or a Generator) replaces the generator's own draws.

        Example:
            >>> datagen = ImageDataGenerator(vertical_flip=True, seed=0)
            >>> x = np.arange(3.0).reshape(1, 3, 1)
            >>> sorted({tuple(datagen.random_transform(x).ravel().tolist()) for _ in range(20)})
            [(0.0, 1.0, 2.0), (2.0, 1.0, 0.0)]
        """
        where = "ImageDataGenerator.random_transform"
        image = _as_image(x, where)
        out = np.array(image, dtype=_float_dtype(image))
        rng = self._rng if seed is None else _generator(seed, where)
        rows, cols = out.shape[1:]
        rotation = self.rotation_range
        angle = rng.uniform(-rotation, rotation) if rotation else 0.0
        shift_rows = rng.uniform(-1, 1) * self.height_shift_range * rows
        shift_cols = rng.uniform(-1, 1) * self.width_shift_range * cols
        shear = rng.uniform(-self.shear_range, self.shear_range) if self.shear_range else 0.0
        flip_cols = self.horizontal_flip and rng.random() < 0.5
        flip_rows = self.vertical_flip and rng.random() < 0.5
        if angle or shift_rows or shift_cols or shear:
            matrix = transform_matrix(rotation=angle, shift=(shift_rows, shift_cols), shear=shear)
            order = 1 if angle or shear else 0
            out = apply_affine_transform(out, matrix, order, self.fill_mode, self.cval)
        if flip_cols:
            out = out[:, :, ::-1]
        if flip_rows:
            out = out[:, ::-1, :]
        return np.ascontiguousarray(out)

    # -------------------------------------------------------------- batches
    def flow(
        self,
        X: Any,
        y: Any = None,
        batch_size: int = 32,
        shuffle: bool = False,
        seed: Any = None,
        save_to_dir: str | os.PathLike[str] | None = None,
        save_prefix: str = "",
        save_format: str = "jpeg",
    ) -> NumpyArrayIterator:
        """A new :class:`NumpyArrayIterator` over ``X`` (and ``y``): endless batches of
        augmented, standardized images, with their labels. Each call gives an iterator of
        its own, so a second ``flow`` (for validation, say) leaves the first as it was.

        Example:
            >>> datagen = ImageDataGenerator(featurewise_center=False,
            ...     featurewise_std_normalization=False)
            >>> batches = datagen.flow(np.zeros((5, 1, 2, 2)), np.arange(5), batch_size=2)
            >>> [next(batches)[1].tolist() for _ in range(4)]
            [[0, 1], [2, 3], [4], [0, 1]]
        """
        return NumpyArrayIterator(
            X,
            y,
            self,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            save_to_dir=save_to_dir,
            save_prefix=save_prefix,
            save_format=save_format,
            owner="ImageDataGenerator.flow",
        )


class NumpyArrayIterator:
    """Endless batches ``(batch_X, batch_y)`` (``batch_X`` alone when ``y`` is None) of the
    images ``X`` ``(samples, channels, rows, cols)``, each transformed at random and
    standardized by ``image_data_generator``. Usually made by
    :meth:`ImageDataGenerator.flow`.

    Each pass over the data (reshuffled when ``shuffle``) gives every sample once, the
    last batch of a pass holding what is left. ``next`` may be called from several
    threads: only choosing a batch's samples is done under a lock. Random draws come from
    the iterator's own Generator (from ``seed``, else from ``image_data_generator``'s),
    and each batch's transforms from a seed drawn with its samples, so one seed gives the
    same batches whichever threads ask for them. Batches keep a floating ``X``'s dtype
    (float32 otherwise). ``save_to_dir`` writes every augmented image there as
    ``{save_prefix}_{number}.{save_format}`` (needs Pillow). ``owner`` names the caller
    in error messages.

    Example:
        >>> datagen = ImageDataGenerator(featurewise_center=False,
        ...     featurewise_std_normalization=False)
        >>> batches = NumpyArrayIterator(np.zeros((3, 1, 2, 2), dtype=np.uint8), None, datagen)
        >>> batch_X = next(batches)
        >>> batch_X.shape, batch_X.dtype
        ((3, 1, 2, 2), dtype('float32'))
    """

    def __init__(
        self,
        X: Any,
        y: Any,
        image_data_generator: ImageDataGenerator,
        batch_size: int = 32,
        shuffle: bool = False,
        seed: Any = None,
        save_to_dir: str | os.PathLike[str] | None = None,
        save_prefix: str = "",
        save_format: str = "jpeg",
        *,
        owner: str = "NumpyArrayIterator",
    ) -> None:
        self.X = _as_images(X, owner)
        self.y = None if y is None else np.asarray(y)
        if self.y is not None and (self.y.ndim == 0 or len(self.y) != len(self.X)):
            received = "a scalar" if self.y.ndim == 0 else f"{len(self.y)} labels"
            raise ValueError(
                f"{owner}: X and y must hold as many samples, received {len(self.X)} images "
                f"and {received}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise TypeError(f"{owner}: batch_size must be a positive int, received {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"{owner}: batch_size must be a positive int, received {batch_size!r}")
        if not isinstance(image_data_generator, ImageDataGenerator):
            raise TypeError(
                f"{owner} expects an ImageDataGenerator, received "
                f"{type(image_data_generator).__name__}"
            )
        if save_to_dir is not None:
            _pillow(f"{owner}(save_to_dir=...)")
        self.image_data_generator = image_data_generator
        self.n = len(self.X)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.dtype = _float_dtype(self.X)
        self.save_to_dir = save_to_dir
        self.save_prefix = save_prefix
        self.save_format = save_format
        if seed is None:
            seed = int(image_data_generator._rng.integers(0, 2**63 - 1))
        self._rng = _generator(seed, owner)
        self._lock = threading.Lock()
        self._order = np.arange(self.n)
        self._position = 0  # where the next batch starts in self._order
        self.total_batches_seen = 0
        self._samples_seen = 0

    def __repr__(self) -> str:
        return (
            f"<NumpyArrayIterator of {self.n} samples, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}>"
        )

    def reset(self) -> None:
        """Start the next batch at the beginning of a new pass (reshuffled if ``shuffle``).

        Example:
            >>> datagen = ImageDataGenerator(featurewise_center=False,
            ...     featurewise_std_normalization=False)
            >>> batches = datagen.flow(np.zeros((4, 1, 1, 1)), np.arange(4), batch_size=3)
            >>> _ = next(batches)
            >>> batches.reset()
            >>> next(batches)[1]
            array([0, 1, 2])
        """
        with self._lock:
            self._position = 0

    def __iter__(self) -> NumpyArrayIterator:
        return self

    def next(self) -> Any:
        """The next batch: ``(batch_X, batch_y)``, or ``batch_X`` when ``y`` is None
        (``next(iterator)`` calls it).

        Example:
            >>> datagen = ImageDataGenerator(featurewise_center=False,
            ...     featurewise_std_normalization=False)
            >>> batches = datagen.flow(np.zeros((4, 1, 1, 1)), batch_size=3)
            >>> batches.next().shape, batches.next().shape
            ((3, 1, 1, 1), (1, 1, 1, 1))
        """
        with self._lock:
            if self._position == 0 and self.shuffle:
                self._order = self._rng.permutation(self.n)
            start = self._position
            indices = self._order[start : start + self.batch_size]
            self._position = 0 if start + len(indices) >= self.n else start + len(indices)
            first_number = self._samples_seen
            self._samples_seen += len(indices)
            self.total_batches_seen += 1
            batch_seed = int(self._rng.integers(0, 2**63 - 1))
        batch_rng = np.random.default_rng(batch_seed)
        generator = self.image_data_generator
        batch_X = np.empty((len(indices), *self.X.shape[1:]), dtype=self.dtype)
        for position, index in enumerate(indices):
            image = generator.random_transform(self.X[index], batch_rng)
            batch_X[position] = generator.standardize(image)
        if self.save_to_dir is not None:
            for position in range(len(indices)):
                name = f"{self.save_prefix}_{first_number + position}.{self.save_format}"
                array_to_img(batch_X[position]).save(os.path.join(self.save_to_dir, name))
        if self.y is None:
            return batch_X
        return batch_X, self.y[indices]

    def __next__(self) -> Any:
        return self.next()
