"""Training through Sequential: compile, fit, evaluate, weights, callbacks, determinism."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

import numlayers as nl
from numlayers import constraints, regularizers
from numlayers.callbacks import (
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    TerminateOnNaN,
)
from numlayers.layers import ActivityRegularization, Dense, Dropout
from numlayers.models import Sequential
from numlayers.optimizers import SGD, Adam


def blobs(n=96, seed=0, classes=3, features=4):
    """Separable clusters: a problem a small MLP must solve."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (classes, features))
    labels = rng.integers(0, classes, n)
    X = centers[labels] + rng.normal(0, 0.5, (n, features))
    return X.astype("float32"), np.eye(classes, dtype="float32")[labels], labels


def mlp(device="cpu", dtype="float32", seed=1, hidden=16, dropout=0.0):
    nl.set_seed(seed)
    model = Sequential(device=device, dtype=dtype)
    model.add(Dense(hidden, input_shape=(4,), activation="relu"))
    if dropout:
        model.add(Dropout(dropout))
    model.add(Dense(3, activation="softmax"))
    return model


def test_fit_learns_and_evaluate_reports_loss_and_accuracy():
    X, Y, labels = blobs()
    model = mlp()
    model.compile(
        SGD(lr=0.1, momentum=0.9, nesterov=True), "categorical_crossentropy", metrics=["accuracy"]
    )
    before = model.evaluate(X, Y)
    history = model.fit(X, Y, batch_size=16, nb_epoch=15, verbose=0)
    loss, accuracy = model.evaluate(X, Y)
    assert loss < before[0] / 3
    assert accuracy > 0.95
    assert len(history.history["loss"]) == 15
    assert history.history["loss"][-1] < history.history["loss"][0]
    np.testing.assert_array_equal(model.predict_classes(X), model.predict(X).argmax(1))
    assert (model.predict_classes(X) == labels).mean() > 0.95


def test_train_and_test_on_batch_return_loss_and_metrics():
    X, Y, _ = blobs(8)
    model = mlp()
    model.compile("sgd", "mse", metrics=["accuracy"])
    loss, accuracy = model.test_on_batch(X, Y)
    expected = np.mean((model.predict(X).astype(np.float64) - Y) ** 2)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert accuracy == pytest.approx(np.mean(model.predict(X).argmax(1) == Y.argmax(1)))
    assert model.train_on_batch(X, Y)[0] == pytest.approx(loss, rel=1e-6)
    assert model.test_on_batch(X, Y)[0] < loss
    model.compile("sgd", "mse")
    assert isinstance(model.train_on_batch(X, Y), float)


def test_fused_softmax_crossentropy_matches_the_plain_loss_and_has_no_nan():
    X, Y, _ = blobs(16)
    model = mlp(dtype="float64")
    model.compile("sgd", "categorical_crossentropy")
    fused_loss = model.test_on_batch(X, Y)
    probabilities = model.predict(X)
    expected = -np.mean(np.sum(Y * np.log(np.clip(probabilities, 1e-7, 1 - 1e-7)), axis=1))
    assert fused_loss == pytest.approx(expected, rel=1e-6)
    huge = Sequential(dtype="float32")
    huge.add(
        Dense(2, input_shape=(1,), activation="softmax", weights=[[[1000.0, -1000.0]], [0, 0]])
    )
    huge.compile(SGD(lr=1e-3), "categorical_crossentropy")
    loss = huge.train_on_batch(np.array([[1.0], [-1.0]]), np.array([[0.0, 1.0], [0.0, 1.0]]))
    assert math.isfinite(loss) and loss > 100
    assert np.all(np.isfinite(huge.get_weights()[0]))


def test_sparse_categorical_crossentropy_takes_integer_labels():
    X, Y, labels = blobs(32)
    model = mlp(dtype="float64")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    sparse = model.evaluate(X, labels)
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    dense = model.evaluate(X, Y)
    np.testing.assert_allclose(sparse, dense, rtol=1e-9)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(X, labels + 3, verbose=0)


def test_sample_weight_and_class_weight_follow_keras_weighting():
    X, Y, labels = blobs(12)
    model = mlp(dtype="float64")
    model.compile("sgd", "mse")
    per_sample = np.mean((model.predict(X) - Y) ** 2, axis=1)
    weights = np.arange(12.0) % 3
    expected = np.sum(per_sample * weights) / np.count_nonzero(weights)
    assert model.test_on_batch(X, Y, sample_weight=weights) == pytest.approx(expected)
    class_weight = {0: 2.0, 1: 0.5}
    expected_class = np.array([class_weight.get(int(c), 1.0) for c in labels])
    before = model.get_weights()
    loss = model.train_on_batch(X, Y, class_weight=class_weight)
    assert loss == pytest.approx(np.sum(per_sample * expected_class) / 12)
    assert not np.array_equal(before[0], model.get_weights()[0])


def test_validation_split_and_validation_data_add_val_logs(capsys):
    X, Y, _ = blobs(40)
    model = mlp()
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(X, Y, nb_epoch=2, validation_split=0.25, verbose=2)
    assert set(history.history) == {"loss", "acc", "val_loss", "val_acc"}
    printed = capsys.readouterr().out
    assert printed.count("Epoch") == 2 and "val_loss" in printed
    history = model.fit(X[:30], Y[:30], epochs=1, validation_data=(X[30:], Y[30:]), verbose=0)
    assert history.history["val_loss"][0] == pytest.approx(
        model.evaluate(X[30:], Y[30:])[0], rel=0.2
    )
    assert capsys.readouterr().out == ""


def test_epoch_logs_are_size_weighted_batch_means_whether_or_not_batches_are_logged():
    """Silent fit sums the batch values on the device; with a callback each batch's values
    come to the host: both give the mean over samples of the batch values."""
    X, Y, _ = blobs(40)
    batch_logs: list[dict] = []
    recorder = LambdaCallback(on_batch_end=lambda batch, logs: batch_logs.append(dict(logs)))
    histories = []
    for callbacks in ([], [recorder]):
        model = mlp(seed=3)
        model.compile(SGD(lr=0.1), "categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(
            X, Y, batch_size=16, nb_epoch=2, shuffle=False, verbose=0, callbacks=callbacks
        )
        histories.append(history.history)
    silent, logged = histories
    assert [logs["size"] for logs in batch_logs] == [16, 16, 8] * 2
    for epoch in range(2):
        batches = batch_logs[3 * epoch : 3 * epoch + 3]
        for name in ("loss", "acc"):
            expected = sum(logs[name] * logs["size"] for logs in batches) / 40
            assert logged[name][epoch] == pytest.approx(expected, rel=1e-6)
            assert silent[name][epoch] == pytest.approx(expected, rel=1e-5)


def test_stop_training_during_a_batch_ends_the_epoch_there_and_the_run():
    X, Y, _ = blobs(40)
    model = mlp()
    model.compile(SGD(lr=0.1), "categorical_crossentropy")
    losses: list[float] = []

    def stop_after_two_batches(batch, logs):
        losses.append(logs["loss"])
        model.stop_training = batch == 1

    history = model.fit(
        X,
        Y,
        batch_size=10,
        nb_epoch=3,
        shuffle=False,
        verbose=0,
        callbacks=[LambdaCallback(on_batch_end=stop_after_two_batches)],
    )
    assert len(losses) == 2
    assert history.history["loss"] == [pytest.approx(sum(losses) / 2, rel=1e-6)]


def test_validation_split_trains_on_the_first_samples_and_validates_on_the_last():
    X, Y, _ = blobs(40)
    model = mlp()
    model.compile(SGD(lr=0.1), "categorical_crossentropy", metrics=["accuracy"])
    params: list[dict] = []
    recorder = LambdaCallback(on_train_begin=lambda logs: params.append(dict(recorder.params)))
    history = model.fit(
        X, Y, batch_size=8, nb_epoch=1, validation_split=0.25, verbose=0, callbacks=[recorder]
    )
    assert params[0]["nb_sample"] == 30 and params[0]["do_validation"]
    assert params[0]["metrics"] == ["loss", "acc", "val_loss", "val_acc"]
    val_loss, val_acc = model.evaluate(X[30:], Y[30:], batch_size=8)
    assert history.history["val_loss"] == [pytest.approx(val_loss, rel=1e-6)]
    assert history.history["val_acc"] == [pytest.approx(val_acc, rel=1e-6)]


def test_verbose_one_shows_a_progress_bar(capsys):
    X, Y, _ = blobs(40)
    model = mlp()
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    model.fit(X, Y, nb_epoch=1, batch_size=10, verbose=1)
    printed = capsys.readouterr().out
    assert "Epoch 1/1" in printed and "4/4" in printed and "loss=" in printed


def test_fit_is_bitwise_reproducible_with_a_seed():
    X, Y, _ = blobs(48)
    results = []
    for _ in range(2):
        model = mlp(seed=5, dropout=0.3)
        model.compile(Adam(), "categorical_crossentropy")
        model.fit(X, Y, nb_epoch=2, batch_size=8, verbose=0)
        results.append(model.get_weights())
    for first, second in zip(*results, strict=True):
        np.testing.assert_array_equal(first, second)


def test_cpu_and_cuda_train_the_same_model_to_the_same_losses():
    X, Y, _ = blobs(12)
    losses = {}
    for device in ("cpu", "cuda"):
        model = mlp(device=device, seed=2, hidden=5)
        model.compile(SGD(lr=0.1, momentum=0.9), "categorical_crossentropy")
        history = model.fit(X, Y, batch_size=6, nb_epoch=2, shuffle=False, verbose=0)
        losses[device] = history.history["loss"]
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=1e-4)


def test_model_moves_between_devices_with_its_optimizer_state():
    X, Y, _ = blobs(8)
    model = mlp(hidden=4)
    model.compile(Adam(), "categorical_crossentropy")
    model.train_on_batch(X, Y)
    expected = model.predict(X)
    model.to("cuda")
    np.testing.assert_allclose(model.predict(X), expected, rtol=1e-5, atol=1e-6)
    model.train_on_batch(X, Y)
    assert model.optimizer.iterations == 2
    model.to("cpu")
    assert model.predict(X).shape == (8, 3)


def test_early_stopping_stops_when_the_monitor_stalls():
    X, Y, _ = blobs(16)
    model = mlp()
    model.compile(SGD(lr=0.0), "categorical_crossentropy")  # nothing can improve
    stopper = EarlyStopping(monitor="loss", patience=2)
    history = model.fit(X, Y, nb_epoch=50, verbose=0, callbacks=[stopper])
    # as in Keras 0.3: the best epoch, then `patience` epochs of waiting, then one more
    assert len(history.history["loss"]) == 4
    assert stopper.stopped_epoch == 3
    with pytest.raises(KeyError, match="val_loss"):
        model.fit(X, Y, nb_epoch=1, verbose=0, callbacks=[EarlyStopping()])


def test_model_checkpoint_saves_best_weights_that_reload_exactly(tmp_path):
    X, Y, _ = blobs(32)
    model = mlp()
    model.compile(Adam(lr=0.01), "categorical_crossentropy")
    path = tmp_path / "best.npz"
    model.fit(
        X,
        Y,
        nb_epoch=4,
        verbose=0,
        validation_split=0.25,
        callbacks=[ModelCheckpoint(str(path), save_best_only=True)],
    )
    assert path.exists()
    restored = mlp(seed=99)
    restored.load_weights(str(path))
    saved = np.load(path, allow_pickle=False)
    assert restored.get_weights()[0].tobytes() == saved[saved.files[1]].tobytes()


def test_save_weights_refuses_to_overwrite_and_loads_bit_exact(tmp_path):
    model = mlp(dtype="float64")
    path = tmp_path / "weights.npz"
    model.save_weights(str(path))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save_weights(str(path))
    model.save_weights(str(path), overwrite=True)
    other = mlp(dtype="float64", seed=42)
    other.load_weights(str(path))
    for a, b in zip(model.get_weights(), other.get_weights(), strict=True):
        assert a.tobytes() == b.tobytes()
    wrong = Sequential()
    wrong.add(Dense(3, input_shape=(4,), name=model.layers[0].name))
    before = wrong.get_weights()
    with pytest.raises(ValueError):
        wrong.load_weights(str(path))
    np.testing.assert_array_equal(wrong.get_weights()[0], before[0])


def test_terminate_on_nan_stops_training():
    X, Y, _ = blobs(16)
    model = mlp()
    model.compile(SGD(lr=1e30), "mse")
    history = model.fit(
        X, Y * 1e30, nb_epoch=5, batch_size=4, verbose=0, callbacks=[TerminateOnNaN()]
    )
    assert len(history.history["loss"]) == 1


def test_learning_rate_scheduler_csv_logger_and_lambda_callback(tmp_path):
    X, Y, _ = blobs(16)
    model = mlp()
    model.compile(SGD(lr=0.5), "mse")
    seen = []
    path = tmp_path / "log.csv"
    model.fit(
        X,
        Y,
        nb_epoch=3,
        verbose=0,
        callbacks=[
            LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1)),
            CSVLogger(str(path)),
            LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append((epoch, logs["loss"]))),
        ],
    )
    assert model.optimizer.lr == pytest.approx(0.1 / 3)
    rows = list(csv.DictReader(path.open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert [e for e, _ in seen] == [0, 1, 2]
    assert float(rows[2]["loss"]) == pytest.approx(seen[2][1], rel=1e-6)


def test_weight_regularizer_adds_its_penalty_and_gradient():
    X, Y, _ = blobs(8)
    nl.set_seed(0)
    model = Sequential(dtype="float64")
    model.add(Dense(3, input_shape=(4,), W_regularizer=regularizers.l2(0.1)))
    model.compile(SGD(lr=0.0), "mse")
    W = model.get_weights()[0]
    plain = np.mean(np.mean((model.predict(X) - Y) ** 2, axis=1))
    assert model.test_on_batch(X, Y) == pytest.approx(plain + 0.1 * np.sum(W**2))


def test_activity_regularization_layer_adds_a_per_sample_penalty():
    X, Y, _ = blobs(8)
    model = Sequential(dtype="float64")
    model.add(Dense(3, input_shape=(4,)))
    model.add(ActivityRegularization(l1=0.01))
    model.compile("sgd", "mse")
    out = model.predict(X)
    plain = np.mean(np.mean((out - Y) ** 2, axis=1))
    assert model.test_on_batch(X, Y) == pytest.approx(plain + 0.01 * np.abs(out).sum() / 8)


def test_constraints_hold_after_each_update():
    X, Y, _ = blobs(16)
    model = Sequential(dtype="float64")
    model.add(
        Dense(
            3,
            input_shape=(4,),
            W_constraint=constraints.maxnorm(0.5),
            b_constraint=constraints.nonneg(),
        )
    )
    model.compile(SGD(lr=1.0), "mse")
    model.fit(X, -Y, nb_epoch=2, verbose=0)
    W, b = model.get_weights()
    assert np.all(np.linalg.norm(W, axis=0) <= 0.5 + 1e-9)
    assert np.all(b >= 0)


def test_frozen_layers_do_not_change():
    X, Y, _ = blobs(16)
    model = mlp()
    model.layers[0].trainable = False
    frozen = model.layers[0].get_weights()
    model.compile(SGD(lr=0.1), "mse")
    model.fit(X, Y, nb_epoch=1, verbose=0)
    np.testing.assert_array_equal(model.layers[0].get_weights()[0], frozen[0])


def test_summary_lists_layers_shapes_and_counts(capsys):
    model = mlp()
    model.summary()
    printed = capsys.readouterr().out
    assert "dense" in printed and "(None, 16)" in printed and "(None, 3)" in printed
    assert f"Total params: {model.count_params():,}" in printed
    assert "Trainable params: 131" in printed


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m, X, Y: m.compile("sgd", "not_a_loss"), ValueError, "unknown loss"),
        (lambda m, X, Y: m.compile("not_an_optimizer", "mse"), ValueError, "unknown optimizer"),
        (lambda m, X, Y: m.compile("sgd", "mse", metrics=["f1"]), ValueError, "unknown metric"),
        (lambda m, X, Y: m.fit(X, Y[:, :2], verbose=0), ValueError, "shape"),
        (lambda m, X, Y: m.fit(X[:0], Y[:0], verbose=0), ValueError, "empty"),
        (lambda m, X, Y: m.fit(X, Y[:5], verbose=0), ValueError, "samples"),
        (lambda m, X, Y: m.fit(X[:, :3], Y, verbose=0), ValueError, "shape"),
        (lambda m, X, Y: m.fit(X, Y, batch_size=0, verbose=0), ValueError, "batch_size"),
        (lambda m, X, Y: m.fit(X.astype(str), Y, verbose=0), TypeError, "numbers"),
        (
            lambda m, X, Y: m.fit(X, Y, validation_split=1.5, verbose=0),
            ValueError,
            "validation_split",
        ),
    ],
    ids=[
        "unknown-loss",
        "unknown-optimizer",
        "unknown-metric",
        "wrong-y-shape",
        "empty-X",
        "length-mismatch",
        "wrong-X-shape",
        "bad-batch-size",
        "string-X",
        "bad-split",
    ],
)
def test_bad_arguments_raise_clear_errors(call, error, match):
    X, Y, _ = blobs(16)
    model = mlp()
    model.compile("sgd", "categorical_crossentropy")
    with pytest.raises(error, match=match):
        call(model, X, Y)


def test_fit_before_compile_is_a_clear_error():
    X, Y, _ = blobs(8)
    with pytest.raises(RuntimeError, match="not compiled"):
        mlp().fit(X, Y)
