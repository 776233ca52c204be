"""A fuzz corpus: hypothesis draws hostile inputs, configs and weights files.

Over every catalogue layer: input layouts the kernels cannot read (reversed, strided,
broadcast and Fortran-order views), NaN and Inf, and wrong ranks, sizes and dtypes,
through ``layer(x)``, ``forward``, ``predict`` and ``fit``. Each must give a clear error
naming the layer (or its model), or the result the contiguous input gives (and so the
NumPy reference). Configs with entries replaced by hostile values (callables named by
reference among them) must load or be refused with a clear error, and run no code.
Weights files with flipped bits, cut tails and lying headers must be refused, leaving
the model's weights untouched, or load bit-exact.

The corpus is fixed: ``derandomize=True`` draws the same examples on every run, and
:data:`EXAMPLES` bounds how many per test and row, so the suite's time stays put.
"""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numlayers import register_function
from numlayers.layers import Dense, Layer, deserialize
from numlayers.models import Sequential
from numlayers.testing import tolerance
from numlayers.testing.catalogue import CATALOGUE, LayerCase
from numlayers.weights_io import WeightsFileError

#: examples per test and catalogue row (on CUDA, where the simulator is slow, fewer)
EXAMPLES = 3
CUDA_EXAMPLES = 1

corpus = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

CASES = [pytest.param(case, id=case.id) for case in CATALOGUE]
FLOAT_CASES = [pytest.param(case, id=case.id) for case in CATALOGUE if case.sampler is None]

CALLS: list[str] = []


@register_function(name="fuzz_canary_registered")
def canary(x: Any) -> Any:
    """A module-level function a hostile config names: it must never run on load."""
    CALLS.append("canary")
    return x


def names_of(layer: Layer, model: Any = None) -> str:
    """A pattern matching the name of the layer, its inner layers or its model."""
    owners = [layer, *layer.weight_layers()] + ([model] if model is not None else [])
    return "|".join(re.escape(owner.name) for owner in owners)


def host_sample(case: LayerCase, layer: Layer) -> np.ndarray:
    return layer.device.to_host(layer.prepare_input(case.sample(np.float32))).copy()


# ------------------------------------------------------------------ input layouts
def view_of(x: np.ndarray, layout: str) -> np.ndarray:
    """``x``'s values in a layout other than C-contiguous (broadcast: its first sample)."""
    if layout == "reversed":
        return np.ascontiguousarray(x[::-1])[::-1]
    if layout == "strided":
        doubled = np.empty((2 * len(x), *x.shape[1:]), x.dtype)
        doubled[::2] = x
        doubled[1::2] = -7
        return doubled[::2]
    if layout == "broadcast":
        return np.broadcast_to(x[:1], x.shape)
    if layout == "fortran":
        return np.asfortranarray(x)
    raise AssertionError(layout)


def poison(x: np.ndarray, index: int, value: float) -> np.ndarray:
    if x.dtype.kind != "f":
        return x
    poisoned = x.copy()
    poisoned.flat[index % poisoned.size] = value
    return poisoned


LAYOUTS = st.sampled_from(["reversed", "strided", "broadcast", "fortran"])
POISONS = st.sampled_from([None, np.nan, np.inf, -np.inf])


def assert_same_values(got: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], **tolerance(np.float32))


def check_layouts(
    case: LayerCase, device: str, layout: str, poison_value: float | None, index: int
) -> None:
    """``layer(x)`` (and on the CPU ``predict``) give the reference's values for any
    layout; on the CPU ``forward`` refuses what the kernels cannot read, naming the layer.
    (On CUDA every array is copied to the device, so only ``layer(x)`` is checked.)"""
    layer = case.make(dtype=np.float32).to(device)
    x = host_sample(case, layer)
    if poison_value is not None:
        x = poison(x, index, poison_value)
    view = view_of(x, layout)
    contiguous = np.ascontiguousarray(view)
    weights = [w.astype(np.float64) for w in layer.get_weights()]
    with np.errstate(all="ignore"):
        expected = case.reference(
            contiguous.astype(np.float64) if x.dtype.kind == "f" else contiguous, weights
        )
        assert_same_values(layer.device.to_host(layer(view, train=case.train)), expected)
    if device != "cpu":
        return
    if not view.flags.c_contiguous:
        with pytest.raises(ValueError, match=f"({names_of(layer)}).*C-contiguous"):
            layer.forward(view)
    if not case.train:
        model = Sequential([layer])
        with np.errstate(all="ignore"):
            assert_same_values(model.predict(view, batch_size=len(view)), expected)


@pytest.mark.parametrize("case", CASES)
@corpus
@given(layout=LAYOUTS, poison_value=POISONS, index=st.integers(0, 1 << 16))
def test_any_layout_gives_the_contiguous_result_or_a_clear_error(
    case: LayerCase, layout: str, poison_value: float | None, index: int
) -> None:
    check_layouts(case, "cpu", layout, poison_value, index)


@pytest.mark.parametrize("case", CASES)
@settings(corpus, max_examples=CUDA_EXAMPLES)
@given(layout=LAYOUTS, poison_value=POISONS, index=st.integers(0, 1 << 16))
def test_any_layout_on_cuda_gives_the_contiguous_result(
    case: LayerCase, layout: str, poison_value: float | None, index: int
) -> None:
    """The same on CUDA (the simulator without a GPU: fewer examples)."""
    check_layouts(case, "cuda", layout, poison_value, index)


@pytest.mark.parametrize("case", CASES)
@corpus
@given(layout=LAYOUTS)
def test_fit_on_any_layout_trains_as_on_the_contiguous_input(case: LayerCase, layout: str) -> None:
    """One SGD epoch on a view changes the weights exactly as on its contiguous copy."""
    models = []
    for _ in range(2):
        model = Sequential([case.make(dtype=np.float32)])
        model.compile("sgd", "mse")
        models.append(model)
    x = host_sample(case, models[0].layers[0])
    y_shape = (len(x), *models[0].layers[-1].training_output_shape[1:])
    y = np.random.default_rng(3).uniform(-1, 1, y_shape).astype(np.float32)
    view = view_of(x, layout)
    for model, inputs in zip(models, (view, np.ascontiguousarray(view)), strict=True):
        model.fit(inputs, y, batch_size=len(x), nb_epoch=1, shuffle=False, verbose=0)
    for got, expected in zip(models[0].get_weights(), models[1].get_weights(), strict=True):
        np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------ wrong ranks, sizes, dtypes
def misshapen(x: np.ndarray, kind: str) -> Any:
    if kind == "rank-down":
        return x.reshape(len(x), -1)[:, 0] if x.ndim > 1 else x[0]
    if kind == "rank-up":
        return x[..., None]
    if kind == "size":
        return np.concatenate([x, x], axis=-1)
    if kind == "complex":
        return x.astype(np.complex64)
    if kind == "text":
        return x.astype(np.str_)
    if kind == "objects":
        return x.astype(object)
    raise AssertionError(kind)


WRONG_INPUTS = ["rank-down", "rank-up", "size", "complex", "text", "objects"]


@pytest.mark.parametrize("case", CASES)
@settings(corpus, max_examples=len(WRONG_INPUTS))
@given(kind=st.sampled_from(WRONG_INPUTS))
def test_wrong_rank_size_or_dtype_is_refused_naming_the_layer_or_model(
    case: LayerCase, kind: str
) -> None:
    layer = case.make(dtype=np.float32)
    x = misshapen(host_sample(case, layer), kind)
    model = Sequential([layer])
    model.compile("sgd", "mse")
    pattern = names_of(layer, model)
    y = np.zeros((len(x), *model.output_shape[1:]), np.float32) if np.ndim(x) else None
    with pytest.raises((ValueError, TypeError), match=pattern):
        layer(x)
    with pytest.raises((ValueError, TypeError), match=pattern):
        model.predict(x)
    if y is not None:
        with pytest.raises((ValueError, TypeError), match=pattern):
            model.fit(x, y, nb_epoch=1, verbose=0)


# ------------------------------------------------------------------------- configs
HOSTILE_VALUES = st.one_of(
    st.sampled_from(
        [
            f"{__name__}:canary",
            "fuzz_canary_registered",
            "builtins:exec",
            "os:system",
            "pickle:loads",
            "sys:exit",
        ]
    ),
    st.sampled_from([None, True, -1, 0, 2**70, float("nan"), float("inf"), "", [], {}]),
    st.text(max_size=8),
    st.lists(st.integers(-3, 3), max_size=4),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def config_paths(config: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every entry of a nested config (dict keys and list positions)."""
    if isinstance(config, dict):
        items = list(config.items())
    elif isinstance(config, list):
        items = list(enumerate(config))
    else:
        return []
    paths = []
    for key, value in items:
        paths.append((*prefix, key))
        paths += config_paths(value, (*prefix, key))
    return paths


def replaced(config: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(config) if isinstance(config, dict) else list(config)
    copy[path[0]] = replaced(config[path[0]], path[1:], value)
    return copy


@pytest.mark.parametrize("case", CASES)
@corpus
@given(data=st.data())
def test_hostile_configs_load_or_are_refused_and_run_no_code(case: LayerCase, data: Any) -> None:
    config = case.make(dtype=np.float32).get_config()
    path = data.draw(st.sampled_from(config_paths(config)), label="path")
    hostile = replaced(config, path, data.draw(HOSTILE_VALUES, label="value"))
    CALLS.clear()
    try:
        layer = deserialize(hostile)
    except (ValueError, TypeError) as error:
        assert str(error), "an error must say what is wrong"
    else:
        assert isinstance(layer, Layer)
    assert CALLS == []


# -------------------------------------------------------------------- weights files
def weighted_model() -> Sequential:
    model = Sequential([Dense(4, input_shape=(3,), seed=1), Dense(2, seed=2)])
    model.compile("sgd", "mse")
    return model


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[np.ndarray]]:
    model = weighted_model()
    path = tmp_path_factory.mktemp("weights") / "model.npz"
    model.save_weights(str(path))
    return path.read_bytes(), model.get_weights()


def load_or_refuse(data: bytes, tmp_path: Any, original: list[np.ndarray]) -> None:
    """Loading ``data`` must raise WeightsFileError and leave the weights untouched, or
    load bit-exact."""
    path = tmp_path / "damaged.npz"
    path.write_bytes(data)
    model = weighted_model()
    before = model.get_weights()
    try:
        model.load_weights(str(path))
    except WeightsFileError:
        for got, expected in zip(model.get_weights(), before, strict=True):
            np.testing.assert_array_equal(got, expected)
    else:
        for got, expected in zip(model.get_weights(), original, strict=True):
            np.testing.assert_array_equal(got, expected)


@settings(
    max_examples=8 * EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 7)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 1 << 20)),
)
def test_flipped_bits_and_cut_tails_are_refused_or_harmless(
    weights_file: tuple[bytes, list[np.ndarray]],
    tmp_path: Any,
    flips: list[tuple[int, int]],
    cut: int | None,
) -> None:
    data, original = weights_file
    damaged = bytearray(data)
    for position, bit in flips:
        damaged[position % len(damaged)] ^= 1 << bit
    if cut is not None:
        damaged = damaged[: cut % len(damaged)]
    load_or_refuse(bytes(damaged), tmp_path, original)


def lying_member(array: np.ndarray, lie: str, value: int) -> bytes:
    """An ``.npy`` member whose header lies about ``array`` (data of the true array)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    payload = buffer.getvalue()
    header_end = payload.index(b"\n") + 1
    header = payload[10:header_end].decode("latin1")
    if lie == "shape":
        header = re.sub(r"'shape': \([^)]*\)", f"'shape': ({value}, {value})", header)
    elif lie == "dtype":
        header = re.sub(
            r"'descr': '[^']*'", "'descr': '|O'" if value % 2 else "'descr': '<c8'", header
        )
    elif lie == "fortran":
        header = header.replace("'fortran_order': False", "'fortran_order': True")
    header = header.rstrip("\n").ljust(len(header) - 1) + "\n"
    return (
        payload[:8]
        + len(header).to_bytes(2, "little")
        + header.encode("latin1")
        + payload[header_end:]
    )


@settings(max_examples=4 * EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    lie=st.sampled_from(["shape", "dtype", "fortran"]),
    value=st.integers(0, 1 << 40),
    member=st.integers(0, 16),
)
def test_lying_array_headers_are_refused_before_reading_data(
    weights_file: tuple[bytes, list[np.ndarray]], tmp_path: Any, lie: str, value: int, member: int
) -> None:
    data, original = weights_file
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    names = [name for name in members if name.startswith("layer_")]
    name = names[member % len(names)]
    array = np.load(io.BytesIO(members[name]))
    members[name] = lying_member(array, lie, value)
    rewritten = io.BytesIO()
    with zipfile.ZipFile(rewritten, "w") as archive:
        for member_name, payload in members.items():
            archive.writestr(member_name, payload)
    load_or_refuse(rewritten.getvalue(), tmp_path, original)
