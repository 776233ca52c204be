"""The layer catalogue: one declarative row per layer configuration.

Each :class:`LayerCase` says how to make the layer, what a sample input looks
like and what the output must be, through a NumPy reference written here,
independently of the kernels. ``tests/test_layer_catalogue.py`` runs every row
through the same generic checks: forward against the reference on every device
and dtype, backward against float64 finite differences, CPU against CUDA,
config round trips and bad inputs. Adding a layer means adding a row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from numlayers import activations, register_function
from numlayers.layers import (
    ELU,
    GRU,
    LSTM,
    Activation,
    ActivityRegularization,
    AutoEncoder,
    BatchNormalization,
    Bidirectional,
    Container,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GaussianDropout,
    GaussianNoise,
    Highway,
    Lambda,
    Layer,
    LeakyReLU,
    MaskedLambda,
    MaskedLayer,
    Masking,
    MaxoutDense,
    ParametricSoftplus,
    Permute,
    PReLU,
    RepeatVector,
    Reshape,
    SiameseHead,
    SimpleRNN,
    SReLU,
    ThresholdedLinear,
    ThresholdedReLU,
    TimeDistributed,
    TimeDistributedDense,
    TimeDistributedMerge,
)
from numlayers.models import Sequential

Reference = Callable[[np.ndarray, list[np.ndarray]], np.ndarray]


@dataclass
class LayerCase:
    """One layer configuration and its NumPy reference.

    Attributes:
        id: readable test id.
        make: ``make(dtype=...)`` returns a new, built layer.
        input_shape: shape of the sample input, batch axis included (tiny).
        reference: ``reference(x, weights) -> y`` in float64 NumPy.
        low, high: range of the uniform sample input.
        train: the flag forward and backward run with.
        gradient_check: whether finite differences apply (smooth enough at the samples).
        sampler: makes the sample from a Generator instead (integer token ids, say).
        input_gradient: whether the layer has a gradient with respect to its input.
    """

    id: str
    make: Callable[..., Layer]
    input_shape: tuple[int, ...]
    reference: Reference
    low: float = -1.0
    high: float = 1.0
    train: bool = False
    gradient_check: bool = True
    sampler: Callable[[np.random.Generator], np.ndarray] | None = None
    input_gradient: bool = True

    def sample(self, dtype: Any = np.float64, seed: int = 0) -> np.ndarray:
        """A sample input: floats in ``dtype`` away from kinks (``|x| >= 0.05``, so relu is
        smooth there), or the sampler's array (its own dtype)."""
        rng = np.random.default_rng(seed)
        if self.sampler is not None:
            return self.sampler(rng)
        x = rng.uniform(self.low, self.high, self.input_shape)
        return np.where(np.abs(x) < 0.05, 0.05 + np.abs(x), x).astype(dtype)

    def layer_class(self) -> type[Layer]:
        """The class of the layer this row makes (a wrapper row gives the wrapper's)."""
        return type(self.make())

    def __str__(self) -> str:
        return self.id


# -------------------------------------------------------------- references
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.where(
        x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x)))
    )


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


ACTIVATION_REFERENCES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "hard_sigmoid": lambda x: np.clip(0.2 * x + 0.5, 0, 1),
    "softplus": lambda x: np.logaddexp(0, x),
    "softmax": _softmax,
}


def _dense_reference(activation: str) -> Reference:
    def reference(x: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
        z = x @ weights[0]
        if len(weights) > 1:
            z = z + weights[1]
        return ACTIVATION_REFERENCES[activation](z)

    return reference


def _activation_reference(name: str) -> Reference:
    return lambda x, weights: ACTIVATION_REFERENCES[name](x)


def _clipped_leaky_relu(alpha: float, max_value: float) -> Callable[[np.ndarray], np.ndarray]:
    """Keras 0.3's ``relu(x, alpha, max_value)``."""
    return lambda x: np.minimum(np.where(x > 0, x, alpha * x), max_value)


def _srelu_reference(x: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
    """Keras 0.3.3's SReLU.call, in NumPy."""
    t_left, a_left, t_right, a_right = weights
    t_right_actual = t_left + np.abs(t_right)
    left_and_center = t_left + np.minimum(
        np.where(x > t_left, x - t_left, a_left * (x - t_left)), t_right_actual - t_left
    )
    return left_and_center + np.maximum(x - t_right_actual, 0) * a_right


def _token_ids(rng: np.random.Generator) -> np.ndarray:
    ids = rng.integers(0, 7, (2, 5))
    ids[0, :2] = 3  # a repeated id: its gradient rows must add up
    return ids


def _with_padding(rng: np.random.Generator) -> np.ndarray:
    x = rng.uniform(-1, 1, (2, 4, 3))
    x[0, 1] = 0.0  # a masked timestep: every feature equals mask_value
    x[1, 3] = 0.0
    return x


def _masking_reference(x: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
    return x * np.any(x != 0.0, axis=-1, keepdims=True)


def _hard_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.clip(0.2 * x + 0.5, 0, 1)


def _recurrent_case(
    kind: str,
    cls: type,
    suffix: str,
    activation: str,
    return_sequences: bool,
    go_backwards: bool,
    seed: int,
) -> LayerCase:
    """The row ``<Layer>-<suffix>``: 3 units over 4 steps of 2 features, batch 2."""
    return LayerCase(
        f"{cls.__name__}-{suffix}",
        lambda **kw: cls(
            3,
            input_shape=(4, 2),
            activation=activation,
            return_sequences=return_sequences,
            go_backwards=go_backwards,
            seed=seed,
            **kw,
        ),
        (2, 4, 2),
        _recurrent_reference(kind, return_sequences, go_backwards, activation),
    )


def _recurrent_reference(
    kind: str, return_sequences: bool, go_backwards: bool, activation: str = "tanh"
) -> Reference:
    """Keras 0.3's SimpleRNN, GRU and LSTM equations, step by step in NumPy."""
    act = ACTIVATION_REFERENCES[activation]

    def reference(x: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
        batch, steps, _ = x.shape
        W, b = weights[0], weights[-1]
        units = W.shape[1] // {"rnn": 1, "gru": 3, "lstm": 4}[kind]
        h = np.zeros((batch, units))
        c = np.zeros((batch, units))
        outputs = np.zeros((batch, steps, units))
        order = range(steps - 1, -1, -1) if go_backwards else range(steps)
        for t in order:
            z = x[:, t] @ W + b
            if kind == "rnn":
                h = act(z + h @ weights[1])
            elif kind == "lstm":
                z = z + h @ weights[1]
                i, f, g, o = (z[:, k * units : (k + 1) * units] for k in range(4))
                c = _hard_sigmoid(f) * c + _hard_sigmoid(i) * act(g)
                h = _hard_sigmoid(o) * act(c)
            else:
                U_zr, U_h = weights[1], weights[2]
                zr = z[:, : 2 * units] + h @ U_zr
                update, reset = _hard_sigmoid(zr[:, :units]), _hard_sigmoid(zr[:, units:])
                candidate = act(z[:, 2 * units :] + (reset * h) @ U_h)
                h = update * h + (1 - update) * candidate
            outputs[:, t] = h
        return outputs if return_sequences else h

    return reference


def _bidirectional_reference(kind: str, merge: str, return_sequences: bool) -> Reference:
    forward = _recurrent_reference(kind, return_sequences, False)
    backward = _recurrent_reference(kind, return_sequences, True)

    def reference(x: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
        half = len(weights) // 2
        a, b = forward(x, weights[:half]), backward(x, weights[half:])
        return np.concatenate([a, b], -1) if merge == "concat" else a + b

    return reference


@register_function
def _square(x: np.ndarray) -> np.ndarray:
    return x * x


@register_function
def _square_backward(x: np.ndarray, grad: np.ndarray) -> np.ndarray:
    return 2 * x * grad


def _batch_norm_weights(features: int) -> list[np.ndarray]:
    """``[gamma, beta, running_mean, running_var]``, none of them trivial."""
    rng = np.random.default_rng(12)
    gamma, beta, running_mean = rng.uniform(-1.0, 1.0, (3, features))
    return [gamma + 2.0, beta, running_mean, rng.uniform(0.5, 2.0, features)]


def _batch_norm_reference(mode: int, axis: int, train: bool, epsilon: float) -> Reference:
    """Mode 0 normalises over every axis but ``axis`` (batch statistics when training,
    else the running ones), mode 1 over ``axis`` alone; then ``gamma * . + beta``."""

    def reference(x: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
        gamma, beta, running_mean, running_var = weights
        feature_shape = [1] * x.ndim
        feature_shape[axis] = -1
        if mode == 1:
            mean = x.mean(axis=axis, keepdims=True)
            variance = x.var(axis=axis, keepdims=True)
        elif train:
            others = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
            mean = x.mean(axis=others, keepdims=True)
            variance = x.var(axis=others, keepdims=True)
        else:
            mean = running_mean.reshape(feature_shape)
            variance = running_var.reshape(feature_shape)
        normalised = (x - mean) / np.sqrt(variance + epsilon)
        return gamma.reshape(feature_shape) * normalised + beta.reshape(feature_shape)

    return reference


def _maxout_reference(x: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
    """Keras 0.3's MaxoutDense: the maximum over the pieces ``x @ W[k] + b[k]``."""
    weight, bias = weights
    return (np.einsum("ni,kio->kno", x, weight) + bias[:, None, :]).max(axis=0)


def _highway_reference(activation: str) -> Reference:
    """Keras 0.3's Highway: ``f(x @ W + b) * t + x * (1 - t)``, ``t`` the sigmoid gate."""

    def reference(x: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
        weight, bias, weight_carry, bias_carry = weights
        gate = _sigmoid(x @ weight_carry + bias_carry)
        return ACTIVATION_REFERENCES[activation](x @ weight + bias) * gate + x * (1 - gate)

    return reference


def _catalogue() -> list[LayerCase]:
    cases = [
        LayerCase(
            "Dense-linear",
            lambda **kw: Dense(4, input_shape=(3,), seed=1, **kw),
            (2, 3),
            _dense_reference("linear"),
        ),
        LayerCase(
            "Dense-no-bias",
            lambda **kw: Dense(3, input_dim=5, bias=False, seed=2, **kw),
            (3, 5),
            _dense_reference("linear"),
        ),
    ]
    for activation in ("relu", "tanh", "sigmoid", "softmax", "softplus", "hard_sigmoid"):
        cases.append(
            LayerCase(
                f"Dense-{activation}",
                lambda activation=activation, **kw: Dense(
                    3, input_shape=(4,), activation=activation, seed=3, **kw
                ),
                (2, 4),
                _dense_reference(activation),
            )
        )
    for name in ("linear", "relu", "tanh", "sigmoid", "hard_sigmoid", "softplus", "softmax"):
        cases.append(
            LayerCase(
                f"Activation-{name}",
                lambda name=name, **kw: Activation(name, input_shape=(5,), **kw),
                (2, 5),
                _activation_reference(name),
                low=-3.0,
                high=3.0,
            )
        )
    cases += [
        LayerCase(
            "Activation-softmax-3d",
            lambda **kw: Activation("softmax", input_shape=(3, 4), **kw),
            (2, 3, 4),
            _activation_reference("softmax"),
            low=-3.0,
            high=3.0,
        ),
        LayerCase(
            "LeakyReLU-alpha0.2",
            lambda **kw: LeakyReLU(0.2, input_shape=(3, 4), **kw),
            (2, 3, 4),
            lambda x, weights: np.where(x > 0, x, 0.2 * x),
        ),
        LayerCase(
            "ELU-alpha0.5",
            lambda **kw: ELU(0.5, input_shape=(5,), **kw),
            (2, 5),
            lambda x, weights: np.where(x > 0, x, 0.5 * np.expm1(x)),
            low=-3.0,
            high=3.0,
        ),
        LayerCase(
            "ThresholdedLinear-theta0.5",
            lambda **kw: ThresholdedLinear(0.5, input_shape=(5,), **kw),
            (2, 5),
            lambda x, weights: x * (np.abs(x) > 0.5),
        ),
        LayerCase(
            "ThresholdedReLU-theta0.5",
            lambda **kw: ThresholdedReLU(0.5, input_shape=(5,), **kw),
            (2, 5),
            lambda x, weights: np.where((x > 0.5) | np.isnan(x), x, 0.0),  # -inf: 0, NaN: NaN
        ),
        LayerCase(
            "Activation-relu-alpha-max_value",
            lambda **kw: Activation(
                activations.get("relu", alpha=0.1, max_value=2.0), input_shape=(5,), **kw
            ),
            (2, 5),
            lambda x, weights: _clipped_leaky_relu(0.1, 2.0)(x),
            low=-3.0,
            high=3.0,
        ),
        LayerCase(
            "Dense-relu-alpha-max_value",
            lambda **kw: Dense(
                3,
                input_shape=(4,),
                activation={"name": "relu", "alpha": 0.2, "max_value": 0.3},
                seed=3,
                **kw,
            ),
            (2, 4),
            lambda x, weights: _clipped_leaky_relu(0.2, 0.3)(x @ weights[0] + weights[1]),
        ),
        LayerCase(
            "PReLU-3d",
            lambda **kw: PReLU("glorot_uniform", input_shape=(3, 4), seed=12, **kw),
            (2, 3, 4),
            lambda x, weights: np.where(x > 0, x, weights[0] * x),
        ),
        LayerCase(
            "ParametricSoftplus",
            lambda **kw: ParametricSoftplus(input_shape=(5,), **kw),
            (2, 5),
            lambda x, weights: weights[0] * np.logaddexp(0, weights[1] * x),
        ),
        LayerCase(
            "SReLU",
            lambda **kw: SReLU(input_shape=(2, 3), seed=13, **kw),
            (3, 2, 3),
            _srelu_reference,
            low=-2.0,
            high=2.0,
        ),
        LayerCase(
            "Dropout-inference",
            lambda **kw: Dropout(0.5, seed=7, input_shape=(4,), **kw),
            (2, 4),
            lambda x, weights: x,
        ),
        LayerCase(
            "Dropout-p0-training",
            lambda **kw: Dropout(0.0, input_shape=(4,), **kw),
            (2, 4),
            lambda x, weights: x,
            train=True,
        ),
        LayerCase(
            "GaussianNoise-inference",
            lambda **kw: GaussianNoise(0.3, seed=7, input_shape=(4,), **kw),
            (2, 4),
            lambda x, weights: x,
        ),
        LayerCase(
            "GaussianDropout-inference",
            lambda **kw: GaussianDropout(0.4, seed=7, input_shape=(2, 3), **kw),
            (2, 2, 3),
            lambda x, weights: x,
        ),
        LayerCase(
            "Flatten",
            lambda **kw: Flatten(input_shape=(3, 2), **kw),
            (2, 3, 2),
            lambda x, weights: x.reshape(len(x), -1),
        ),
        LayerCase(
            "Reshape",
            lambda **kw: Reshape((3, -1), input_shape=(6,), **kw),
            (2, 6),
            lambda x, weights: x.reshape(len(x), 3, 2),
        ),
        LayerCase(
            "Permute-2d",
            lambda **kw: Permute((2, 1), input_shape=(3, 4), **kw),
            (2, 3, 4),
            lambda x, weights: x.transpose(0, 2, 1),
        ),
        LayerCase(
            "Permute-3d",
            lambda **kw: Permute((3, 1, 2), input_shape=(2, 3, 2), **kw),
            (2, 2, 3, 2),
            lambda x, weights: x.transpose(0, 3, 1, 2),
        ),
        LayerCase(
            "RepeatVector",
            lambda **kw: RepeatVector(3, input_shape=(4,), **kw),
            (2, 4),
            lambda x, weights: np.repeat(x[:, None, :], 3, axis=1),
        ),
        LayerCase(
            "TimeDistributedDense-tanh",
            lambda **kw: TimeDistributedDense(
                3, input_shape=(4, 2), activation="tanh", seed=4, **kw
            ),
            (2, 4, 2),
            _dense_reference("tanh"),
        ),
        LayerCase(
            "Embedding",
            lambda **kw: Embedding(7, 3, input_length=5, seed=5, **kw),
            (2, 5),
            lambda ids, weights: weights[0][ids],
            sampler=_token_ids,
            input_gradient=False,
        ),
        LayerCase(
            "Embedding-mask-zero",
            lambda **kw: Embedding(7, 3, input_length=5, mask_zero=True, seed=6, **kw),
            (2, 5),
            lambda ids, weights: weights[0][ids],
            sampler=_token_ids,
            input_gradient=False,
        ),
        LayerCase(
            "Masking",
            lambda **kw: Masking(0.0, input_shape=(4, 3), **kw),
            (2, 4, 3),
            _masking_reference,
            sampler=_with_padding,
            gradient_check=False,  # not differentiable at padded steps; see test_masking
        ),
        LayerCase(
            "ActivityRegularization",
            lambda **kw: ActivityRegularization(0.01, 0.02, input_shape=(3,), **kw),
            (2, 3),
            lambda x, weights: x,
        ),
        LayerCase(
            "Lambda-square",
            lambda **kw: Lambda(_square, backward=_square_backward, input_shape=(3,), **kw),
            (2, 3),
            lambda x, weights: x * x,
        ),
        LayerCase(
            "MaskedLayer",
            lambda **kw: MaskedLayer(input_shape=(4, 3), **kw),
            (2, 4, 3),
            lambda x, weights: x,
        ),
        LayerCase(
            "MaskedLambda-square",
            lambda **kw: MaskedLambda(_square, input_shape=(4, 3), **kw),
            (2, 4, 3),
            lambda x, weights: x * x,
        ),
    ]
    recurrent = {"rnn": SimpleRNN, "gru": GRU, "lstm": LSTM}
    for kind, cls in recurrent.items():
        for return_sequences, go_backwards in ((False, False), (True, True)):
            suffix = "sequences-backwards" if return_sequences else "last"
            cases.append(
                _recurrent_case(kind, cls, suffix, "tanh", return_sequences, go_backwards, 8)
            )
    # softmax over each sample's units at each step (one row per kind, each with its
    # own pair of options)
    for (kind, cls), (return_sequences, go_backwards) in zip(
        recurrent.items(), ((True, False), (False, True), (True, True)), strict=True
    ):
        cases.append(
            _recurrent_case(kind, cls, "softmax", "softmax", return_sequences, go_backwards, 12)
        )
    cases += [
        LayerCase(
            "Bidirectional-LSTM-concat",
            lambda **kw: Bidirectional(
                LSTM(3, activation="tanh", seed=9), input_shape=(4, 2), **kw
            ),
            (2, 4, 2),
            _bidirectional_reference("lstm", "concat", False),
        ),
        LayerCase(
            "Bidirectional-GRU-sum-sequences",
            lambda **kw: Bidirectional(
                GRU(3, activation="tanh", return_sequences=True, seed=10),
                merge_mode="sum",
                input_shape=(4, 2),
                **kw,
            ),
            (2, 4, 2),
            _bidirectional_reference("gru", "sum", True),
        ),
        LayerCase(
            "TimeDistributed-Dense",
            lambda **kw: TimeDistributed(
                Dense(3, activation="relu", seed=11), input_shape=(4, 2), **kw
            ),
            (2, 4, 2),
            _dense_reference("relu"),
        ),
        LayerCase(
            "Container-Sequential-Dense-tanh-Dense",
            lambda dtype=None, **kw: Container(
                Sequential(
                    [Dense(3, activation="tanh", input_shape=(2,), seed=12), Dense(2, seed=13)],
                    dtype=dtype,
                ),
                **kw,
            ),
            (3, 2),
            lambda x, w: _dense_reference("linear")(_dense_reference("tanh")(x, w[:2]), w[2:]),
        ),
    ]
    cases += [
        LayerCase(
            "MaxoutDense-3-features",
            lambda **kw: MaxoutDense(2, nb_feature=3, input_dim=4, seed=14, **kw),
            (3, 4),
            _maxout_reference,
        ),
        LayerCase(
            "Highway-linear",
            lambda **kw: Highway(input_shape=(4,), seed=15, **kw),
            (3, 4),
            _highway_reference("linear"),
        ),
        LayerCase(
            "Highway-tanh-transform_bias",
            lambda **kw: Highway(
                transform_bias=-0.5, activation="tanh", input_dim=3, seed=16, **kw
            ),
            (2, 3),
            _highway_reference("tanh"),
        ),
    ]
    cases += [
        LayerCase(
            "TimeDistributedMerge-sum",
            lambda **kw: TimeDistributedMerge(input_shape=(3, 2), **kw),
            (2, 3, 2),
            lambda x, weights: x.sum(axis=1),
        ),
        LayerCase(
            "TimeDistributedMerge-ave-4d",
            lambda **kw: TimeDistributedMerge("ave", input_shape=(3, 2, 2), **kw),
            (2, 3, 2, 2),
            lambda x, weights: x.mean(axis=1),
        ),
        LayerCase(
            "TimeDistributedMerge-mul",
            lambda **kw: TimeDistributedMerge("mul", input_shape=(4, 3), **kw),
            (2, 4, 3),
            lambda x, weights: x.prod(axis=1),
        ),
    ]
    cases += [
        LayerCase(
            "AutoEncoder-Dense-tanh-Dense",
            lambda **kw: AutoEncoder(
                Dense(2, input_shape=(4,), activation="tanh", seed=17), Dense(4, seed=18), **kw
            ),
            (3, 4),
            lambda x, w: _dense_reference("linear")(_dense_reference("tanh")(x, w[:2]), w[2:]),
            train=True,
        ),
        LayerCase(
            "AutoEncoder-codes",
            lambda **kw: AutoEncoder(
                Dense(2, input_shape=(3,), seed=19),
                Dense(3, seed=20),
                output_reconstruction=False,
                **kw,
            ),
            (2, 3),
            lambda x, w: _dense_reference("linear")(x, w[:2]),
        ),
    ]
    cases.append(
        LayerCase(
            "SiameseHead-Dense-relu",
            lambda dtype=None, **kw: SiameseHead(
                0, Dense(3, activation="relu", seed=21, dtype=dtype), input_shape=(4,), **kw
            ),
            (2, 4),
            _dense_reference("relu"),
        )
    )
    # BatchNormalization: (mode, axis, input shape, train)
    for mode, axis, shape, train in (
        (0, -1, (4, 3), True),
        (0, -1, (4, 3), False),
        (0, -1, (2, 3, 4), True),
        (0, 1, (2, 3, 2, 2), True),
        (0, 1, (2, 3, 2, 2), False),
        (1, -1, (3, 4), True),
        (1, 1, (2, 3, 2, 2), False),
    ):
        cases.append(
            LayerCase(
                f"BatchNormalization-mode{mode}-{len(shape)}d"
                + ("-axis1" if axis == 1 else "")
                + ("-train" if train else "-test"),
                lambda mode=mode, axis=axis, shape=shape, **kw: BatchNormalization(
                    epsilon=1e-3,
                    mode=mode,
                    axis=axis,
                    momentum=0.8,
                    weights=_batch_norm_weights(shape[axis]),
                    input_shape=shape[1:],
                    **kw,
                ),
                shape,
                _batch_norm_reference(mode, axis, train, 1e-3),
                train=train,
            )
        )
    # the families with catalogue modules of their own (imported here: they import this)
    from numlayers.testing.catalogue_convolutional import convolution_cases
    from numlayers.testing.catalogue_convolutional3d import convolution3d_cases
    from numlayers.testing.catalogue_pooling import pooling_cases
    from numlayers.testing.catalogue_pooling3d import pooling3d_cases
    from numlayers.testing.catalogue_tracing import tracing_cases

    families = convolution_cases() + convolution3d_cases() + pooling_cases() + pooling3d_cases()
    return cases + families + tracing_cases()


CATALOGUE: list[LayerCase] = _catalogue()


def catalogue_case(case_id: str) -> LayerCase:
    """The row of :data:`CATALOGUE` whose id is ``case_id``."""
    for case in CATALOGUE:
        if case.id == case_id:
            return case
    raise KeyError(f"no catalogue row has id {case_id!r}")
