"""Keras 0.3's MaskedLayer and MaskedLambda: layers that pass their input's mask on."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers import backend as K
from numlayers.layers import LSTM, Embedding, Lambda, MaskedLambda, MaskedLayer
from numlayers.models import Sequential

IDS = np.array([[1, 2, 0, 0], [3, 0, 0, 0], [4, 5, 6, 2]])  # 0 pads


class ZeroPadded(MaskedLayer):
    """A Keras 0.3 custom layer, as its docs advise: a MaskedLayer whose get_output
    reads the mask."""

    def get_output(self, train=False):
        x = self.get_input(train)
        mask = self.get_input_mask(train)
        return x * K.expand_dims(mask) + 1.0


def embedded(device="cpu", dtype="float64") -> Sequential:
    model = Sequential(device=device, dtype=dtype)
    model.add(Embedding(7, 3, input_length=4, mask_zero=True, seed=0))
    return model


def lstm_after(model: Sequential, layer) -> np.ndarray:
    if layer is not None:
        model.add(layer)
    model.add(LSTM(2, seed=1))
    return model.predict(IDS)


@pytest.mark.parametrize("make", [MaskedLayer, lambda: MaskedLambda(lambda x: x * 1.0)])
def test_masked_layer_and_lambda_pass_the_mask_to_the_lstm(make):
    direct = lstm_after(embedded(), None)
    through = lstm_after(embedded(), make())
    np.testing.assert_allclose(through, direct, rtol=1e-12)
    # a plain Lambda refuses the masked input it would drop
    with pytest.raises(ValueError, match="cannot take a masked input"):
        lstm_after(embedded(), Lambda(lambda x: x * 1.0))


def test_a_masked_lambda_must_keep_the_masked_axes():
    model = embedded()
    model.add(MaskedLambda(lambda x: x[:, :2]))
    refusal = r"MaskedLambda.*\(3, 2, 3\) does not keep the axes \(3, 4\)"
    with pytest.raises(ValueError, match=refusal):
        model.predict(IDS)


def test_a_custom_masked_layer_traces_the_mask_as_an_input(device, dtype):
    model = embedded(device, dtype)
    model.add(ZeroPadded())
    weights = model.layers[0].get_weights()[0]
    mask = (IDS != 0).astype(dtype)
    expected = weights[IDS] * mask[:, :, None] + 1.0
    np.testing.assert_allclose(model.predict(IDS), expected, rtol=1e-6)
    other = np.array([[0, 0, 0, 1], [2, 2, 0, 0], [1, 1, 1, 1]])  # a new mask, same trace
    np.testing.assert_allclose(
        model.predict(other), weights[other] * (other != 0)[:, :, None] + 1.0, rtol=1e-6
    )


def test_a_custom_masked_layer_back_propagates_to_the_unmasked_steps():
    layer = ZeroPadded(input_shape=(4, 3), dtype="float64")
    rng = np.random.default_rng(0)
    x, grad = rng.normal(size=(3, 4, 3)), rng.normal(size=(3, 4, 3))
    mask = (IDS != 0).astype("float64")
    np.testing.assert_allclose(layer.run_forward(x, mask=mask), x * mask[:, :, None] + 1.0)
    np.testing.assert_allclose(layer.backward(grad), grad * mask[:, :, None])
    # without a mask the body has none to read: refused by name, at the trace
    with pytest.raises(ValueError, match="ZeroPadded.*cannot be traced.*feed it a masked input"):
        layer.run_forward(x)
