"""Optimizers (update rules and convergence), losses as callables, initialisations, seeding."""

from __future__ import annotations

import numpy as np
import pytest

import numlayers as nl
from numlayers import initializations, losses, optimizers
from numlayers.devices import get_device


def numpy_reference_steps(name, hyper, param, grads):
    """Keras 0.3's update rules in plain NumPy (float64)."""
    p = param.copy()
    state = [np.zeros_like(p), np.zeros_like(p)]
    lr = hyper["lr"]
    for t, g in enumerate(grads, start=1):
        if name == "SGD":
            lr_t = lr / (1 + hyper.get("decay", 0.0) * (t - 1))
            m = hyper.get("momentum", 0.0)
            state[0] = m * state[0] - lr_t * g
            p = p + (m * state[0] - lr_t * g if hyper.get("nesterov") else state[0])
        elif name == "RMSprop":
            state[0] = 0.9 * state[0] + 0.1 * g**2
            p = p - lr * g / np.sqrt(state[0] + 1e-6)
        elif name == "Adagrad":
            state[0] = state[0] + g**2
            p = p - lr * g / np.sqrt(state[0] + 1e-6)
        elif name == "Adadelta":
            state[0] = 0.95 * state[0] + 0.05 * g**2
            update = g * np.sqrt(state[1] + 1e-6) / np.sqrt(state[0] + 1e-6)
            p = p - lr * update
            state[1] = 0.95 * state[1] + 0.05 * update**2
        elif name == "Adam":
            state[0] = 0.9 * state[0] + 0.1 * g
            state[1] = 0.999 * state[1] + 0.001 * g**2
            lr_t = lr * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
            p = p - lr_t * state[0] / (np.sqrt(state[1]) + 1e-8)
        elif name == "Adamax":
            state[0] = 0.9 * state[0] + 0.1 * g
            state[1] = np.maximum(0.999 * state[1], np.abs(g))
            p = p - lr / (1 - 0.9**t) * state[0] / (state[1] + 1e-8)
    return p


OPTIMIZER_CASES = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "decay": 0.01}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("RMSprop", {"lr": 0.01}),
    ("Adagrad", {"lr": 0.1}),
    ("Adadelta", {"lr": 1.0}),
    ("Adam", {"lr": 0.01}),
    ("Adamax", {"lr": 0.02}),
]
CASE_IDS = [
    f"{name}-{'-'.join(f'{k}{v}' for k, v in hyper.items())}" for name, hyper in OPTIMIZER_CASES
]


@pytest.mark.parametrize(("name", "hyper"), OPTIMIZER_CASES, ids=CASE_IDS)
def test_first_steps_match_numpy_reference(name, hyper, device):
    rng = np.random.default_rng(0)
    param = rng.normal(size=(3, 2))
    grads = [rng.normal(size=(3, 2)) for _ in range(3)]
    optimizer = getattr(optimizers, name)(**hyper)
    weight = device.asarray(param.copy())
    for g in grads:
        optimizer.update([weight], [device.asarray(g)], device, np.float64)
    np.testing.assert_allclose(
        device.to_host(weight),
        numpy_reference_steps(name, hyper, param, grads),
        rtol=1e-10,
        atol=1e-12,
    )


@pytest.mark.parametrize(("name", "hyper"), OPTIMIZER_CASES, ids=CASE_IDS)
def test_optimizer_drives_a_convex_problem_to_its_optimum(name, hyper):
    """Minimise 0.5 * ||A w - b||^2 (a well-conditioned least-squares problem)."""
    rng = np.random.default_rng(1)
    A = rng.normal(size=(20, 4)) / np.sqrt(20) + np.eye(20, 4)
    b = rng.normal(size=20)
    optimum = np.linalg.lstsq(A, b, rcond=None)[0]
    device = get_device("cpu")
    settings = dict(hyper)
    settings["lr"] = {
        "SGD": 0.1,
        "RMSprop": 0.01,
        "Adagrad": 0.5,
        "Adadelta": 1.0,
        "Adam": 0.05,
        "Adamax": 0.05,
    }[name]
    optimizer = getattr(optimizers, name)(**settings)
    w = np.zeros(4)
    grad = np.zeros(4)
    for _ in range(3000):
        grad[:] = A.T @ (A @ w - b)
        optimizer.update([w], [grad], device, np.float64)
    np.testing.assert_allclose(w, optimum, atol=2e-2)


def test_clipnorm_and_clipvalue(device):
    g = np.array([3.0, 4.0])  # norm 5
    for optimizer, expected in (
        (optimizers.SGD(lr=1.0, clipnorm=1.0), [-0.6, -0.8]),
        (optimizers.SGD(lr=1.0, clipvalue=3.5), [-3.0, -3.5]),
    ):
        w = device.asarray(np.zeros(2))
        optimizer.update([w], [device.asarray(g.copy())], device, np.float64)
        np.testing.assert_allclose(device.to_host(w), expected)


def test_optimizer_state_round_trip_resumes_exactly():
    rng = np.random.default_rng(2)
    grads = [rng.normal(size=5) for _ in range(4)]
    cpu = get_device("cpu")
    straight = optimizers.Adam()
    w1 = np.ones(5)
    for g in grads:
        straight.update([w1], [g.copy()], cpu, np.float64)
    first = optimizers.Adam()
    w2 = np.ones(5)
    for g in grads[:2]:
        first.update([w2], [g.copy()], cpu, np.float64)
    resumed = optimizers.Adam()
    resumed.set_state(first.get_state())
    for g in grads[2:]:
        resumed.update([w2], [g.copy()], cpu, np.float64)
    np.testing.assert_array_equal(w1, w2)
    assert resumed.get_config()["beta_1"] == 0.9


def test_optimizer_follows_restored_states_and_replaced_weights():
    """The update binds its arrays once; restoring a state or passing other weight
    arrays must rebind them, never update stale ones."""
    cpu = get_device("cpu")
    g = np.linspace(-1.0, 1.0, 5)
    optimizer = optimizers.Adam()
    w, grad = np.ones(5), g.copy()
    optimizer.update([w], [grad], cpu, np.float64)
    saved, w_saved = optimizer.get_state(), w.copy()
    optimizer.update([w], [grad], cpu, np.float64)
    w_two_steps = w.copy()
    optimizer.set_state(saved)  # the same optimizer, back one step
    w[:] = w_saved
    optimizer.update([w], [grad], cpu, np.float64)
    np.testing.assert_array_equal(w, w_two_steps)
    other = np.ones(5)
    before = w.copy()
    optimizer.update([other], [grad], cpu, np.float64)
    np.testing.assert_array_equal(w, before)
    assert np.all((other < 1.0) == (g > 0)) and np.all((other > 1.0) == (g < 0))


def test_optimizer_follows_new_gradient_arrays_every_step(device):
    """A fresh gradient array every step, which may even take the id of the last one
    once that is freed: each step must read its own."""
    optimizer = optimizers.SGD(lr=0.5)
    w = device.asarray(np.zeros(4))
    expected = np.zeros(4)
    for step in range(100):
        g = np.full(4, float(step + 1))
        optimizer.update([w], [device.asarray(g)], device, np.float64)
        expected -= 0.5 * g
    np.testing.assert_allclose(device.to_host(w), expected, rtol=1e-12)


def test_optimizer_arguments_are_validated():
    with pytest.raises(ValueError, match="lr"):
        optimizers.SGD(lr=-1)
    with pytest.raises(TypeError, match="momentun"):
        optimizers.SGD(momentun=0.9)
    assert isinstance(optimizers.get("rmsprop"), optimizers.RMSprop)
    assert optimizers.get("adam").lr == 0.001 and optimizers.Adadelta().lr == 1.0


LOSS_REFERENCES = {
    "mean_squared_error": lambda t, p: np.mean((t - p) ** 2, -1),
    "mean_absolute_error": lambda t, p: np.mean(np.abs(t - p), -1),
    "mean_absolute_percentage_error": lambda t, p: (
        100 * np.mean(np.abs(t - p) / np.clip(np.abs(t), 1e-7, None), -1)
    ),
    "mean_squared_logarithmic_error": lambda t, p: np.mean(
        (np.log(np.clip(p, 1e-7, None) + 1) - np.log(np.clip(t, 1e-7, None) + 1)) ** 2, -1
    ),
    "squared_hinge": lambda t, p: np.mean(np.maximum(1 - t * p, 0) ** 2, -1),
    "hinge": lambda t, p: np.mean(np.maximum(1 - t * p, 0), -1),
    "binary_crossentropy": lambda t, p: np.mean(
        -(
            t * np.log(np.clip(p, 1e-7, 1 - 1e-7))
            + (1 - t) * np.log(1 - np.clip(p, 1e-7, 1 - 1e-7))
        ),
        -1,
    ),
    "categorical_crossentropy": lambda t, p: (
        -np.sum(t * np.log(np.clip(p / p.sum(-1, keepdims=True), 1e-7, 1 - 1e-7)), -1)
    ),
    "poisson": lambda t, p: np.mean(p - t * np.log(p + 1e-7), -1),
    "cosine_proximity": lambda t, p: (
        -np.sum(
            t
            / np.linalg.norm(t, axis=-1, keepdims=True)
            * p
            / np.linalg.norm(p, axis=-1, keepdims=True),
            -1,
        )
    ),
}


@pytest.mark.parametrize("name", sorted(LOSS_REFERENCES))
def test_losses_are_callables_matching_numpy(name):
    rng = np.random.default_rng(3)
    t = rng.uniform(0.1, 1, (4, 3))
    p = rng.uniform(0.1, 1, (4, 3))
    loss = losses.get(name)
    np.testing.assert_allclose(loss(t, p), LOSS_REFERENCES[name](t, p), rtol=1e-6)
    assert losses.get(loss) is loss


def test_loss_aliases_and_sparse_labels():
    assert losses.get("mse") is losses.mean_squared_error is losses.mse
    p = np.array([[0.2, 0.8], [0.6, 0.4]])
    np.testing.assert_allclose(
        losses.sparse_categorical_crossentropy([1, 0], p), -np.log([0.8, 0.6])
    )


@pytest.mark.parametrize(
    ("name", "mean", "std"),
    [
        ("uniform", 0, 0.05 / np.sqrt(3)),
        ("normal", 0, 0.05),
        ("lecun_uniform", 0, np.sqrt(1 / 200)),
        ("glorot_normal", 0, np.sqrt(2 / 500)),
        ("glorot_uniform", 0, np.sqrt(2 / 500)),
        ("he_normal", 0, np.sqrt(2 / 200)),
        ("he_uniform", 0, np.sqrt(2 / 200)),
        ("zero", 0, 0),
        ("one", 1, 0),
    ],
)
def test_initializer_statistics(name, mean, std):
    values = initializations.draw(name, (200, 300), np.random.default_rng(0))
    assert values.shape == (200, 300)
    assert abs(values.mean() - mean) < 0.01 + 0.05 * std
    assert values.std() == pytest.approx(std, rel=0.05, abs=1e-12)


def test_orthogonal_and_identity_initializers():
    q = initializations.orthogonal((30, 30), rng=np.random.default_rng(0))
    np.testing.assert_allclose(q @ q.T, 1.21 * np.eye(30), atol=1e-10)
    np.testing.assert_array_equal(initializations.identity((3, 3)), np.eye(3))
    with pytest.raises(ValueError, match="square"):
        initializations.identity((2, 3))


def test_set_seed_makes_initial_weights_reproducible():
    from numlayers.layers import Dense

    nl.set_seed(123)
    first = Dense(4, input_shape=(3,)).get_weights()[0]
    nl.set_seed(123)
    second = Dense(4, input_shape=(3,)).get_weights()[0]
    np.testing.assert_array_equal(first, second)
    explicit = Dense(4, input_shape=(3,), seed=np.random.default_rng(7)).get_weights()[0]
    assert not np.array_equal(explicit, first)
    with pytest.raises(ValueError, match="non-negative"):
        nl.set_seed(-1)
