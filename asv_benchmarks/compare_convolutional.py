"""Section k of ``compare.py``: the convolutional layers against PyTorch CPU.

- Convolution2D 3x3, 32 -> 32 channels, 32 x 32 images, batch 64, ``"same"``, channels
  first, forward plus backward (input and weight gradients) against ``nn.Conv2d``;
  target <= 1.3.
- Convolution1D filter 5, 128 -> 128, length 100, batch 32, forward plus backward against
  ``nn.Conv1d`` (on PyTorch's channels-first layout, what its users hold); target <= 1.3.
- MaxPooling2D 2 x 2 forward plus backward on the convolution's output (64 x 32 x 32 x 32)
  against ``nn.MaxPool2d(2)``; target <= 1.0.
- Convolution3D 3 x 3 x 3 "same", 16 -> 16 channels, 8 volumes of 16 x 32 x 32, channels
  first, forward plus backward against ``nn.Conv3d``; target <= 1.3.
- MaxPooling3D 2 x 2 x 2 forward plus backward on 8 volumes of 16 channels x 16 x 32 x 32
  (channels first) against ``nn.MaxPool3d(2)``; target <= 1.0.
- One Adam training step of the digits CNN (``examples/digits_cnn.py``) at batch 64
  against the same network in PyTorch (``nn.Conv2d``, ``nn.MaxPool2d``, ``nn.Dropout``,
  ``nn.Linear``, ``CrossEntropyLoss`` on the logits, ``zero_grad``/``backward``/``step``
  and ``loss.item()``); target <= 1.0.
- With a GPU: the same Convolution2D forward at batch 256 against cuDNN
  (``torch.backends.cudnn``, TF32 off), reported without a target.

Both sides hold the same weights; each row notes the largest output difference.

Run alone (section k only, with PyTorch importable)::

    python asv_benchmarks/compare_convolutional.py [--quick] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np
from benchmarks.bench_training import classification_batch, small_cnn
from benchmarks.common import disable_tf32, real_gpu
from harness import Row, Settings, measure, print_table, rng_array, settings

from numlayers.layers import (
    Convolution1D,
    Convolution2D,
    Convolution3D,
    Layer,
    MaxPooling2D,
    MaxPooling3D,
)

CONVOLUTION_TARGET = 1.3
POOLING_TARGET = 1.0
CNN_STEP_TARGET = 1.0


def convolutional_vs_torch(torch: Any, config: Settings, gpu: bool) -> list[Row]:
    """Every row of section k (the cuDNN row only when ``gpu``)."""
    rows = [
        convolution_2d_row(torch, config),
        convolution_1d_row(torch, config),
        max_pooling_row(torch, config),
        convolution_3d_row(torch, config),
        max_pooling_3d_row(torch, config),
        cnn_step_row(torch, config),
    ]
    if gpu:
        rows.append(convolution_2d_cudnn_row(torch, config))
    return rows


def layer_and_torch_timings(
    torch: Any,
    config: Settings,
    layer: Layer,
    module: Any,
    x: np.ndarray,
    torch_x: np.ndarray,
) -> tuple[dict[str, float], float]:
    """Forward plus backward timings of ``layer`` on ``x`` and ``module`` on ``torch_x``
    (both computing their input gradient), and the largest output difference (outputs
    compared in PyTorch's layout, ``torch_x``'s, by :func:`to_torch_layout`)."""
    layer.needs_input_gradient = True
    y = layer.run_forward(x, True)
    g = rng_array(y.shape, 21)
    tx = torch.from_numpy(torch_x).requires_grad_()
    ty = module(tx)
    tg = torch.from_numpy(to_torch_layout(g, ty.shape))
    difference = float(np.abs(to_torch_layout(y, ty.shape) - ty.detach().numpy()).max())
    parameters = list(module.parameters())

    def ours() -> None:
        layer.run_forward(x, True)
        layer.backward(g)

    def theirs() -> None:
        tx.grad = None
        for parameter in parameters:
            parameter.grad = None
        module(tx).backward(tg)

    return measure({"ours": ours, "torch": theirs}, config), difference


def layer_row(
    torch: Any,
    config: Settings,
    case: str,
    target: float,
    layer: Layer,
    module: Any,
    x: np.ndarray,
    torch_x: np.ndarray | None = None,
) -> Row:
    """Section k's row ``case``: ``layer`` on ``x`` against ``module`` on ``torch_x``
    (default ``x``), forward plus backward, noting the largest output difference."""
    t, difference = layer_and_torch_timings(
        torch, config, layer, module, x, x if torch_x is None else torch_x
    )
    note = f"max abs output difference {difference:.1e}"
    return Row("k", case, t["ours"], t["torch"], target, note)


def copy_weights(torch: Any, module: Any, weight: np.ndarray, bias: np.ndarray) -> Any:
    """``module`` holding ``weight`` and ``bias`` (a layer's, in PyTorch's layout)."""
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
        module.bias.copy_(torch.from_numpy(bias))
    return module


def to_torch_layout(array: np.ndarray, torch_shape: Any) -> np.ndarray:
    """``array`` as PyTorch holds it: a 3-D ``(samples, steps, channels)`` array becomes
    channels first when that is PyTorch's shape."""
    if array.shape != tuple(torch_shape) and array.ndim == 3:
        return np.ascontiguousarray(array.transpose(0, 2, 1))
    return array


def convolution_2d_case(config: Settings) -> tuple[int, int, int, int]:
    """(batch, channels, size, filters) of the Convolution2D rows."""
    return (2, 3, 6, 4) if config.batch < 16 else (64, 32, 32, 32)


def convolution_2d_pair(torch: Any, channels: int, size: int, filters: int) -> tuple[Layer, Any]:
    """Convolution2D 3x3 "same" on ``size`` x ``size`` images and an ``nn.Conv2d`` holding
    the same weights."""
    layer = Convolution2D(filters, 3, 3, border_mode="same", input_shape=(channels, size, size))
    weight, bias = layer.get_weights()  # Keras 0.3 "th": (filters, channels, rows, cols)
    module = torch.nn.Conv2d(channels, filters, 3, padding=1)
    return layer, copy_weights(torch, module, weight, bias)


def convolution_2d_row(torch: Any, config: Settings) -> Row:
    batch, channels, size, filters = convolution_2d_case(config)
    layer, module = convolution_2d_pair(torch, channels, size, filters)
    x = rng_array((batch, channels, size, size), 22)
    case = f"Convolution2D 3x3 same {channels}->{filters} {size}x{size} batch {batch} fwd+bwd"
    return layer_row(torch, config, f"{case} vs nn.Conv2d", CONVOLUTION_TARGET, layer, module, x)


def convolution_1d_row(torch: Any, config: Settings) -> Row:
    batch, length, channels, filters = (2, 9, 3, 4) if config.batch < 16 else (32, 100, 128, 128)
    layer = Convolution1D(filters, 5, input_dim=channels, input_length=length)
    weight, bias = layer.get_weights()  # Keras 0.3: (filters, channels, length, 1)
    module = copy_weights(torch, torch.nn.Conv1d(channels, filters, 5), weight[..., 0], bias)
    x = rng_array((batch, length, channels), 23)
    torch_x = np.ascontiguousarray(x.transpose(0, 2, 1))
    case = f"Convolution1D filter 5 {channels}->{filters} length {length} batch {batch} fwd+bwd"
    return layer_row(
        torch, config, f"{case} vs nn.Conv1d", CONVOLUTION_TARGET, layer, module, x, torch_x
    )


def max_pooling_row(torch: Any, config: Settings) -> Row:
    batch, channels, size, filters = convolution_2d_case(config)
    layer = MaxPooling2D(pool_size=(2, 2), input_shape=(filters, size, size))
    x = rng_array((batch, filters, size, size), 24)
    case = f"MaxPooling2D 2x2 {filters}x{size}x{size} batch {batch} fwd+bwd vs nn.MaxPool2d"
    return layer_row(torch, config, case, POOLING_TARGET, layer, torch.nn.MaxPool2d(2), x)


def volume_case(config: Settings) -> tuple[int, int, int, int]:
    """(batch, channels, depth, size) of the 3-D rows: volumes of depth x size x size."""
    return (1, 2, 2, 4) if config.batch < 16 else (8, 16, 16, 32)


def convolution_3d_row(torch: Any, config: Settings) -> Row:
    batch, channels, depth, size = volume_case(config)
    layer = Convolution3D(
        channels, 3, 3, 3, border_mode="same", input_shape=(channels, depth, size, size)
    )
    weight, bias = layer.get_weights()  # "th": (filters, channels, dim1, dim2, dim3)
    module = copy_weights(torch, torch.nn.Conv3d(channels, channels, 3, padding=1), weight, bias)
    x = rng_array((batch, channels, depth, size, size), 26)
    case = (
        f"Convolution3D 3x3x3 same {channels}->{channels} {depth}x{size}x{size} batch {batch} "
        "fwd+bwd vs nn.Conv3d"
    )
    return layer_row(torch, config, case, CONVOLUTION_TARGET, layer, module, x)


def max_pooling_3d_row(torch: Any, config: Settings) -> Row:
    batch, channels, depth, size = volume_case(config)
    layer = MaxPooling3D(pool_size=(2, 2, 2), input_shape=(channels, depth, size, size))
    x = rng_array((batch, channels, depth, size, size), 25)
    case = (
        f"MaxPooling3D 2x2x2 {channels}x{depth}x{size}x{size} batch {batch} fwd+bwd vs nn.MaxPool3d"
    )
    return layer_row(torch, config, case, POOLING_TARGET, layer, torch.nn.MaxPool3d(2), x)


def torch_cnn(torch: Any, model: Any) -> Any:
    """The digits CNN in PyTorch, holding a copy of the Sequential ``model``'s weights."""
    nn = torch.nn
    first, second = model.layers[0], model.layers[1]
    filters = first.get_weights()[0].shape[0]
    hidden = model.layers[5].get_weights()[0].shape[1]
    network = nn.Sequential(
        nn.Conv2d(1, filters, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(filters, filters, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(filters * 9, hidden),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(hidden, 10),
    )
    pairs = ((network[0], first), (network[2], second))
    pairs += ((network[7], model.layers[5]), (network[10], model.layers[7]))
    with torch.no_grad():
        for module, layer in pairs:
            weight, bias = layer.get_weights()
            weight = weight if weight.ndim == 4 else weight.T
            module.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
            module.bias.copy_(torch.from_numpy(bias))
    return network


def cnn_step_row(torch: Any, config: Settings) -> Row:
    tiny = config.batch < 16
    batch = 2 if tiny else 64
    model = small_cnn("cpu", *((3, 4) if tiny else (32, 128)))
    x, y = classification_batch(batch, 64, 10)
    x = x.reshape(batch, 1, 8, 8)
    network = torch_cnn(torch, model)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    loss_function = torch.nn.CrossEntropyLoss()
    tx = torch.from_numpy(x)
    labels = torch.from_numpy(y.argmax(axis=1))

    def ours() -> float:
        return float(model.train_on_batch(x, y))

    def theirs() -> float:
        optimizer.zero_grad()
        loss = loss_function(network(tx), labels)
        loss.backward()
        optimizer.step()
        return float(loss.item())

    t = measure({"ours": ours, "torch": theirs}, config)
    return Row(
        "k",
        f"digits CNN train step (Adam, dropout) batch {batch} vs torch",
        t["ours"],
        t["torch"],
        CNN_STEP_TARGET,
    )


def convolution_2d_cudnn_row(torch: Any, config: Settings) -> Row:
    _, channels, size, filters = convolution_2d_case(config)
    batch = 256
    layer, module = convolution_2d_pair(torch, channels, size, filters)
    layer.to("cuda")
    module = module.cuda()
    disable_tf32(torch)
    torch.backends.cudnn.benchmark = True
    x = rng_array((batch, channels, size, size), 25)
    ours_x = layer.device.asarray(x)
    tx = torch.from_numpy(x).cuda()

    def ours() -> None:
        layer.run_forward(ours_x, False)
        layer.device.synchronize()

    def theirs() -> None:
        with torch.no_grad():
            module(tx)
        torch.cuda.synchronize()

    t = measure({"ours": ours, "cudnn": theirs}, config)
    return Row(
        "k",
        f"Convolution2D 3x3 same {channels}->{filters} {size}x{size} batch {batch} forward "
        "(GPU) vs cuDNN",
        t["ours"],
        t["cudnn"],
    )


def main(argv: list[str] | None = None) -> int:
    """Section k alone: its rows against PyTorch CPU (and cuDNN with a GPU)."""
    parser = argparse.ArgumentParser(description="Section k of compare.py alone")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter samples")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (smoke test)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    rows = convolutional_vs_torch(torch, settings(args.quick, args.tiny), real_gpu())
    print_table(rows, args.tiny)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
