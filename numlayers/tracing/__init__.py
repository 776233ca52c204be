"""Tracing NumPy-style functions into programs with automatic gradients.

A :class:`~numlayers.layers.Lambda` (or a custom layer's ``call``) is called once per
input signature with :class:`Traced` arrays; the recorded :class:`Program` gets its
reverse pass (:func:`add_gradients`), and an :class:`Executable` runs both as fused
kernels on the layer's device.
"""

from numlayers.tracing.execute import Executable
from numlayers.tracing.gradients import add_gradients
from numlayers.tracing.layer import TracedCall, TracedLayer, TracingFallbackWarning
from numlayers.tracing.program import Program, TraceError
from numlayers.tracing.traced import Traced, trace

__all__ = [
    "Executable",
    "Program",
    "TraceError",
    "Traced",
    "TracedCall",
    "TracedLayer",
    "TracingFallbackWarning",
    "add_gradients",
    "trace",
]
