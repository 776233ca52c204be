"""scikit-learn estimators around a model-building function, as Keras 0.3's
``keras.wrappers.scikit_learn``: :class:`KerasClassifier` and :class:`KerasRegressor`.

``build_fn`` makes and compiles a Sequential; its keyword arguments, and those of
``fit``, ``predict``, ``predict_classes`` and ``evaluate``, are the estimator's
parameters, so ``GridSearchCV`` and ``cross_val_score`` can tune them all (the
number of units and ``nb_epoch``, say). ``fit`` builds a fresh model each time.

Where Keras 0.3's wrapper misled scikit-learn this one does not:

- the classifier learns its ``classes_`` from ``y`` and predicts those labels (Keras
  0.3 returned column indices, right only for labels ``0 .. k-1``);
- ``predict_proba`` of a one-unit sigmoid output gives both columns, ``1 - p`` and ``p``,
  as scikit-learn's binary classifiers do;
- the regressor's ``score`` is the negated loss, so that a higher score is better, as
  model selection assumes (Keras 0.3 returned the loss, and a grid search picked the
  worst model);
- a parameter no function takes raises a ValueError naming it, not an assert.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from numlayers.models import Sequential
from numlayers.training import Model

try:  # scikit-learn is optional: with it, the estimators take its tags and mixins
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
except ImportError:  # pragma: no cover - plain classes; the protocol is duck-typed

    class BaseEstimator:  # type: ignore[no-redef]
        pass

    class ClassifierMixin:  # type: ignore[no-redef]
        pass

    class RegressorMixin:  # type: ignore[no-redef]
        pass


def _parameter_names(function: Callable[..., Any]) -> set[str]:
    return set(inspect.signature(function).parameters) - {"self"}


class BaseWrapper(BaseEstimator):
    """What both estimators share: the parameters and ``fit``.

    Args:
        build_fn: a function (or callable object) returning a compiled model; None in a
            subclass that defines ``__call__`` instead.
        sk_params: arguments of ``build_fn`` and of the model's ``fit``, ``predict``,
            ``predict_classes`` and ``evaluate``.
    """

    def __init__(self, build_fn: Callable[..., Model] | None = None, **sk_params: Any) -> None:
        self.build_fn = build_fn
        self.sk_params = sk_params
        self.check_params(sk_params)

    def _builder(self) -> Callable[..., Model]:
        if self.build_fn is not None:
            return self.build_fn
        # a subclass's __call__ is the default build_fn (Keras 0.3)
        owners = [kind for kind in type(self).__mro__ if "__call__" in kind.__dict__]
        builder = owners[0].__dict__["__call__"] if owners else None
        if builder is None:
            raise TypeError(
                f"{type(self).__name__}: give build_fn, a function returning a compiled model "
                "(or define __call__ in a subclass)"
            )
        return functools.partial(builder, self)

    def check_params(self, params: dict[str, Any]) -> None:
        """Refuse a parameter that neither ``build_fn`` nor the model's methods take."""
        legal = _parameter_names(self._builder())
        for method in (Sequential.fit, Sequential.predict, Sequential.predict_classes,
                       Sequential.evaluate):  # fmt: skip
            legal |= _parameter_names(method)
        unknown = sorted(set(params) - legal)
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: {unknown} are not parameters of build_fn or of the "
                "model's fit, predict, predict_classes or evaluate"
            )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The estimator's parameters (scikit-learn's protocol)."""
        params = copy.deepcopy(self.sk_params)
        params["build_fn"] = self.build_fn
        return params

    def set_params(self, **params: Any) -> BaseWrapper:
        """Change parameters (scikit-learn's protocol); returns the estimator."""
        if "build_fn" in params:
            self.build_fn = params.pop("build_fn")
        self.check_params(params)
        self.sk_params.update(params)
        return self

    def filter_sk_params(
        self, function: Callable[..., Any], override: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The parameters ``function`` takes, ``override`` winning."""
        names = _parameter_names(function)
        chosen = {name: value for name, value in self.sk_params.items() if name in names}
        chosen.update(override or {})
        return chosen

    def _targets(self, y: Any) -> np.ndarray:
        return np.asarray(y)

    def fit(self, X: Any, y: Any, **kwargs: Any) -> Any:
        """Build a new model with ``build_fn`` and train it on ``(X, y)``; ``kwargs`` are
        ``fit``'s, over the estimator's. Returns the History."""
        builder = self._builder()
        self.model = builder(**self.filter_sk_params(builder))
        arguments = self.filter_sk_params(Sequential.fit, kwargs)
        arguments.setdefault("verbose", 0)
        return self.model.fit(np.asarray(X), self._targets(y), **arguments)


class KerasClassifier(ClassifierMixin, BaseWrapper):
    """A scikit-learn classifier: labels of any kind in ``y``, one-hot targets for a
    softmax output of one unit a class, or 0/1 targets for a one-unit sigmoid output.

    Example:
        >>> def build(units=8):
        ...     model = Sequential([Dense(units, input_shape=(2,), activation="tanh"),
        ...                         Dense(2, activation="softmax")])
        ...     model.compile("adam", "categorical_crossentropy")
        ...     return model
        >>> X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 8, dtype="float32")
        >>> y = np.array(["no", "yes", "yes", "no"] * 8)
        >>> classifier = KerasClassifier(build, units=4, nb_epoch=2)
        >>> _ = classifier.fit(X, y)
        >>> set(classifier.predict(X).tolist()) <= {"no", "yes"}
        True
        >>> classifier.classes_.tolist(), classifier.predict_proba(X).shape
        (['no', 'yes'], (32, 2))
    """

    def _targets(self, y: Any) -> np.ndarray:
        labels = np.asarray(y)
        if labels.ndim == 2 and labels.shape[1] > 1:  # one-hot already: classes are columns
            self.classes_ = np.arange(labels.shape[1])
            return labels
        labels = labels.reshape(len(labels))
        self.classes_, indices = np.unique(labels, return_inverse=True)
        units = int(self.model.output_layers()[0].output_shape[-1] or 0)
        if units == 1:
            if len(self.classes_) > 2:
                raise ValueError(
                    f"KerasClassifier: a one-unit output tells two classes apart, y has "
                    f"{len(self.classes_)}"
                )
            return indices.astype("float32")
        if len(self.classes_) > units:
            raise ValueError(
                f"KerasClassifier: y has {len(self.classes_)} classes, the model's output "
                f"{units} units"
            )
        return np.eye(units, dtype="float32")[indices]

    def predict(self, X: Any, **kwargs: Any) -> np.ndarray:
        """The predicted label of each sample."""
        arguments = self.filter_sk_params(Sequential.predict_classes, kwargs)
        indices = np.asarray(self.model.predict_classes(np.asarray(X), **arguments)).reshape(-1)
        return np.asarray(self.classes_[indices])

    def predict_proba(self, X: Any, **kwargs: Any) -> np.ndarray:
        """Each class's probability, a column each (two for a one-unit output)."""
        arguments = self.filter_sk_params(Sequential.predict_proba, kwargs)
        proba = np.asarray(self.model.predict_proba(np.asarray(X), **arguments))
        if proba.shape[-1] == 1:
            return np.hstack([1 - proba, proba])
        return proba

    def score(self, X: Any, y: Any, **kwargs: Any) -> float:
        """The accuracy on ``(X, y)``."""
        return float(np.mean(self.predict(X, **kwargs) == np.asarray(y).reshape(-1)))


class KerasRegressor(RegressorMixin, BaseWrapper):
    """A scikit-learn regressor.

    Example:
        >>> def build():
        ...     model = Sequential([Dense(1, input_shape=(3,))])
        ...     model.compile("sgd", "mse")
        ...     return model
        >>> regressor = KerasRegressor(build, nb_epoch=1)
        >>> _ = regressor.fit(np.ones((8, 3)), np.zeros(8))
        >>> regressor.predict(np.ones((2, 3))).shape
        (2,)
        >>> regressor.score(np.ones((8, 3)), np.zeros(8)) <= 0
        True
    """

    def predict(self, X: Any, **kwargs: Any) -> np.ndarray:
        """The predictions (one value a sample for a one-unit output)."""
        arguments = self.filter_sk_params(Sequential.predict, kwargs)
        predictions = np.asarray(self.model.predict(np.asarray(X), **arguments))
        return predictions.reshape(len(predictions)) if predictions.shape[-1] == 1 else predictions

    def score(self, X: Any, y: Any, **kwargs: Any) -> float:
        """The negated loss on ``(X, y)``: higher is better, as model selection assumes."""
        arguments = self.filter_sk_params(Sequential.evaluate, kwargs)
        arguments["show_accuracy"] = False
        return -float(self.model.evaluate(np.asarray(X), np.asarray(y), **arguments))
