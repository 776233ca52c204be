"""numlayers.wrappers.scikit_learn: Keras 0.3's estimators, inside scikit-learn's model
selection (GridSearchCV, cross_val_score, clone)."""

from __future__ import annotations

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402

import numlayers as nl  # noqa: E402
from numlayers.layers import Dense  # noqa: E402
from numlayers.models import Sequential  # noqa: E402
from numlayers.wrappers.scikit_learn import KerasClassifier, KerasRegressor  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.standard_normal((60, 4)).astype("float32")
LABELS = np.array(["low", "mid", "high"])[(X[:, 0] > -0.4).astype(int) + (X[:, 0] > 0.4)]


def classifier(hidden=8, output="softmax"):
    nl.set_seed(0)
    model = Sequential()
    model.add(Dense(hidden, input_shape=(4,), activation="tanh"))
    if output == "softmax":
        model.add(Dense(3, activation="softmax"))
        model.compile("adam", "categorical_crossentropy")
    else:
        model.add(Dense(1, activation="sigmoid"))
        model.compile("adam", "binary_crossentropy")
    return model


def regressor(hidden=8):
    nl.set_seed(0)
    model = Sequential([Dense(hidden, input_shape=(4,), activation="tanh"), Dense(1)])
    model.compile("adam", "mse")
    return model


def test_a_classifier_predicts_its_labels_and_their_probabilities():
    estimator = KerasClassifier(classifier, hidden=16, nb_epoch=60, batch_size=10)
    estimator.fit(X, LABELS)
    assert list(estimator.classes_) == ["high", "low", "mid"]  # sorted, as scikit-learn's
    predictions = estimator.predict(X)
    assert set(predictions) <= set(LABELS)
    assert estimator.score(X, LABELS) == np.mean(predictions == LABELS) > 0.8
    proba = estimator.predict_proba(X)
    assert proba.shape == (60, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(estimator.classes_[proba.argmax(axis=1)], predictions)


def test_a_one_unit_classifier_gives_both_probability_columns():
    binary = LABELS == "high"
    estimator = KerasClassifier(classifier, output="sigmoid", nb_epoch=40, batch_size=10)
    estimator.fit(X, binary)
    proba = estimator.predict_proba(X)
    assert proba.shape == (60, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(estimator.predict(X), proba[:, 1] > 0.5)


def test_grid_search_and_cross_validation_tune_model_and_fit_parameters():
    search = GridSearchCV(
        KerasClassifier(classifier, batch_size=20),
        {"hidden": [2, 8], "nb_epoch": [1, 30]},
        cv=2,
    )
    search.fit(X, LABELS)
    assert search.best_params_ == {"hidden": 8, "nb_epoch": 30}  # the larger, longer one
    scores = cross_val_score(KerasRegressor(regressor, nb_epoch=5), X, X[:, 0], cv=3)
    assert scores.shape == (3,) and np.all(scores <= 0)  # negated losses: higher is better
    copy = clone(KerasRegressor(regressor, hidden=3, nb_epoch=2))
    assert copy.get_params()["hidden"] == 3 and copy.build_fn is regressor


def test_regressor_score_is_the_negated_loss():
    estimator = KerasRegressor(regressor, nb_epoch=3)
    estimator.fit(X, X[:, 0])
    predictions = estimator.predict(X)
    assert predictions.shape == (60,)
    expected = np.mean((predictions - X[:, 0]) ** 2)
    np.testing.assert_allclose(estimator.score(X, X[:, 0]), -expected, rtol=1e-5)


def test_wrappers_refuse_unknown_parameters_and_a_missing_build_fn():
    with pytest.raises(ValueError, match=r"\['nb_epochs'\] are not parameters"):
        KerasClassifier(classifier, nb_epochs=3)
    with pytest.raises(ValueError, match=r"\['hiden'\] are not parameters"):
        KerasRegressor(regressor).set_params(hiden=3)
    with pytest.raises(TypeError, match="give build_fn"):
        KerasClassifier()
    estimator = KerasClassifier(classifier, output="sigmoid", nb_epoch=1)
    with pytest.raises(ValueError, match="a one-unit output tells two classes apart, y has 3"):
        estimator.fit(X, LABELS)
