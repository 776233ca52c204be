"""What a CUDA step asks of the GPU: kernel launches, copies and synchronisations,
counted by the toolkit's launcher and the CUDA device (the simulator counts the launches
a GPU would get). On a GPU each launch from Python costs about as much as a small
layer's kernel and each device-to-host copy waits for the queue, so these counts are
the step's speed: the tests hold them down."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from numlayers.devices import cuda_activity, launch_kernel
from numlayers.kernels import toolkit
from numlayers.layers import GRU, LSTM, Dense, Dropout, SimpleRNN
from numlayers.models import Sequential

X = np.random.default_rng(0).uniform(-1, 1, (4, 6)).astype("float32")
Y = np.eye(3, dtype="float32")[[0, 1, 2, 0]]


def three_layer_mlp(cuda_graphs: bool = False, optimizer: str = "sgd") -> Sequential:
    model = Sequential(
        [
            Dense(5, input_shape=(6,), activation="relu"),
            Dense(5, activation="relu"),
            Dense(3, activation="softmax"),
        ],
        device="cuda",
    )
    model.compile(optimizer, "categorical_crossentropy", cuda_graphs=cuda_graphs)
    model.train_on_batch(X, Y)  # compiles, allocates the step's buffers
    return model


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_an_mlp_training_step_launches_few_kernels_and_copies_only_the_batch_and_loss(
    optimizer,
):
    # launched from Python (no CUDA graph): the batch (2 arrays) goes in, the loss comes
    # out; the optimizer makes its step's scalars on the device (tests/test_cuda_graphs.py:
    # with a graph, one launch)
    model = three_layer_mlp(optimizer=optimizer)
    with cuda_activity() as step:
        model.train_on_batch(X, Y)
    # forward: a product per layer (the relu layers activate in it) and the softmax;
    # the fused loss, two sums; backward and the updates: 25 in all
    assert step.launches <= 25
    assert (step.to_device, step.to_host, step.synchronizations) == (2, 1, 0)


def test_an_eager_step_with_dropout_passes_its_seeds_with_the_launches():
    """Each dropout application's new seed goes with its kernel's arguments: the step
    still copies only the batch in and the loss out."""
    model = Sequential(
        [
            Dense(5, input_shape=(6,), activation="relu"),
            Dropout(0.5),
            Dense(3, activation="softmax"),
        ],
        device="cuda",
    )
    model.compile("adam", "categorical_crossentropy", cuda_graphs=False)
    model.train_on_batch(X, Y)
    with cuda_activity() as step:
        model.train_on_batch(X, Y)
    assert (step.to_device, step.to_host, step.synchronizations) == (2, 1, 0)


def test_a_new_learning_rate_is_the_one_copy_to_the_device_besides_the_batch():
    """Changing ``lr`` from outside (a callback) writes the device's settings once, before
    the next step; the steps after it copy only the batch again."""
    model = three_layer_mlp(optimizer="adam")
    model.optimizer.lr = 0.5
    copies = []
    for _ in range(2):
        with cuda_activity() as step:
            model.train_on_batch(X, Y)
        copies.append(step.to_device)
    assert copies == [3, 2]


def test_prediction_copies_the_batch_in_and_the_outputs_out():
    model = three_layer_mlp()
    model.predict_on_batch(X)
    with cuda_activity() as step:
        model.predict_on_batch(X)
    assert step.launches <= 10
    assert (step.to_device, step.to_host) == (1, 1)


#: launches of a forward and backward pass, whatever the number of steps: each sequence
#: pass is one kernel; the rest are the input projection, the weight and input
#: gradients (GEMMs) and the layout swaps (the GRU's two recurrent weights take one GEMM
#: each); the zero initial states are filled once, not at every pass
RECURRENT_LAUNCHES = {SimpleRNN: 10, GRU: 11, LSTM: 10}


def recurrent_pass_launches(layer_class, steps):
    layer = layer_class(3, input_shape=(steps, 2)).to("cuda")
    x = layer.device.asarray(np.ones((2, steps, 2), "float32"))
    grad = layer.device.asarray(np.ones((2, 3), "float32"))
    layer.forward(x, True)
    layer.backward(grad)
    with cuda_activity() as passes:
        layer.forward(x, True)
        layer.backward(grad)
    assert (passes.to_device, passes.to_host, passes.synchronizations) == (0, 0, 0)
    return passes.launches


@pytest.mark.parametrize("layer_class", list(RECURRENT_LAUNCHES), ids=lambda c: c.__name__)
def test_recurrent_passes_launch_few_kernels_whatever_the_number_of_steps(layer_class):
    launches = recurrent_pass_launches(layer_class, 3)
    assert launches <= RECURRENT_LAUNCHES[layer_class]
    assert recurrent_pass_launches(layer_class, 7) == launches


# ---------------------------------------------------------------- launch configuration


class RecordedLaunch:
    """What ``kernel[configuration]`` gives in Numba: a launch with callbacks."""

    def __init__(self, configuration, log):
        self.configuration, self.log = configuration, log
        self.pre_launch_callbacks = []

    def __call__(self, *arguments):
        self.log.append((self.configuration, arguments, list(self.pre_launch_callbacks)))


class RecordingKernel:
    def __init__(self):
        self.log = []

    def __getitem__(self, configuration):
        return RecordedLaunch(configuration, self.log)


@pytest.mark.parametrize(
    ("configuration", "expected"),
    [((4, 512), (4, 512, "stream")), ((4, 512, 0, 9000), (4, 512, "stream", 9000))],
)
def test_a_launch_on_a_capture_stream_keeps_its_dynamic_shared_memory(configuration, expected):
    kernel = RecordingKernel()

    def callback(compiled, launch):
        pass

    launch_kernel(kernel, configuration, (1, 2), callback, stream="stream")
    launch_kernel(kernel, configuration, (3,))
    assert kernel.log == [(expected, (1, 2), [callback]), (configuration, (3,), [])]


class CompiledKernel:
    """Numba's compiled kernel as the pre-launch callback sees it."""

    shared_mem_per_block = 2048  # static shared arrays

    def __init__(self):
        function = SimpleNamespace(name="sequence_kernel", handle=7, device=SimpleNamespace(id=0))
        self._codelibrary = SimpleNamespace(get_cufunc=lambda: function)


def test_a_kernel_taking_dynamic_shared_memory_opts_in_once(monkeypatch):
    raised = []
    monkeypatch.setattr(toolkit, "_SHARED_LIMITS", {})
    monkeypatch.setattr(toolkit, "shared_memory_per_block", lambda: 232448)
    monkeypatch.setattr(toolkit, "set_dynamic_shared_limit", lambda f, limit: raised.append(limit))
    kernel = CompiledKernel()
    for sharedmem in (1_000, 230_400, 47_000):
        toolkit.allow_dynamic_shared(kernel, SimpleNamespace(sharedmem=sharedmem))
    assert raised == [230_400]  # the opt-in maximum less the static arrays, once
    with pytest.raises(
        ValueError, match="sequence_kernel asked for 230401 bytes .* allows it 230400"
    ):
        toolkit.allow_dynamic_shared(kernel, SimpleNamespace(sharedmem=230_401))
