"""Both devices build exactly the operations each family's interface declares."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.kernels import FAMILIES, build_family
from numlayers.kernels.interfaces import FAMILY_INTERFACES, Kernels, interface_mismatches


def test_every_family_has_an_interface_and_the_kernel_set_merges_them():
    assert sorted(FAMILY_INTERFACES) == sorted(FAMILIES)
    for interface in FAMILY_INTERFACES.values():
        assert interface in Kernels.__mro__


@pytest.mark.parametrize("family", FAMILIES)
def test_each_device_builds_the_interface_of_the_family(family, device):
    operations = build_family(family, device, np.dtype(np.float32))
    assert interface_mismatches(FAMILY_INTERFACES[family], operations) == []


def test_a_mismatch_is_reported_by_name():
    from numlayers.kernels.activations import ActivationKernels

    def relu_forward(x, out, alpha):
        """A stand-in with a wrong signature."""

    found = interface_mismatches(ActivationKernels, {"relu_forward": relu_forward, "extra": print})
    assert "extra: built, not in the interface" in found
    assert "softmax_forward: in the interface, not built" in found
    assert any(line.startswith("relu_forward: built as (x, out, alpha)") for line in found)
