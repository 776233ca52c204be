"""Grouping a program's elementwise operations into fused kernels.

Consecutive elementwise nodes (in recorded order) of one shape form a group, computed
by one generated kernel (:func:`numlayers.kernels.traced.fused_source`): its inputs are
read once, its intermediate values stay in registers, and only the values read outside
the group (by a later step, by the reverse pass, or as a result) are stored. Any other
operation (a reduction, a product, an index map, a reshape) ends the group.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from numlayers.kernels.traced import MAX_FUSED_ARGUMENTS, FusedStatement, fused_source
from numlayers.tracing.program import ELEMENTWISE, SCALARS, Program, Shape

#: nodes that are values given to a step, not computed by one
SOURCES = frozenset(("input", "const", "gradient", *SCALARS))


@dataclass(frozen=True)
class FusedGroup:
    """One generated kernel: the nodes it computes and how it is called.

    Attributes:
        nodes: the node ids computed, in order.
        shape: the symbolic shape of every node of the group.
        inputs: the array nodes read (each at the index, or broadcast: ``direct``).
        scalars: the scalar nodes passed as arguments.
        outputs: the nodes stored.
        source, name, kinds: the body (see ``fused_source``).
    """

    nodes: tuple[int, ...]
    shape: Shape
    inputs: tuple[int, ...]
    direct: tuple[bool, ...]
    scalars: tuple[int, ...]
    outputs: tuple[int, ...]
    source: str
    name: str
    kinds: tuple[str, ...]


def plan_steps(
    program: Program, nodes: Iterable[int], needed: set[int], live: set[int]
) -> list[FusedGroup | int]:
    """The steps computing ``nodes``: fused groups, and node ids of other operations.

    Elementwise nodes join the open group of their shape, even past other steps that do
    not read it (so the per-slice operations of ``np.stack([f(x[:, k]) ...])`` are one
    kernel); a group runs when a step reads one of its values, or at the end. Reshapes
    are views, made when read, never steps. ``needed`` holds the results of these
    steps; a group stores those of its nodes and any a ``live`` node outside it reads.
    """
    consumers = {
        node: [c for c in readers if c in live] for node, readers in program.consumers().items()
    }
    open_groups: dict[Shape, list[int]] = {}
    group_of: dict[int, Shape] = {}
    runs: list[list[int] | int] = []

    def close(shape: Shape) -> None:
        members = open_groups.pop(shape, None)
        if members is None:
            return
        for member in members:  # groups of smaller shapes it reads run first
            for source in program.nodes[member].inputs:
                found = group_of.get(origin(program, source))
                if found is not None and found != shape:
                    close(found)
        for member in members:
            del group_of[member]
        runs.append(members)

    for node_id in nodes:
        node = program.nodes[node_id]
        if node.op in SOURCES or node.op == "reshape":
            continue
        if node.op in ELEMENTWISE:
            for source in node.inputs:  # a view of a group's value needs it stored first
                if program.nodes[source].op == "reshape":
                    found = group_of.get(origin(program, source))
                    if found is not None:
                        close(found)
            open_groups.setdefault(node.shape, []).append(node_id)
            group_of[node_id] = node.shape
        else:
            for source in node.inputs:
                found = group_of.get(origin(program, source))
                if found is not None:
                    close(found)
            runs.append(node_id)
    for shape in list(open_groups):
        close(shape)
    steps: list[FusedGroup | int] = []
    for run in runs:
        if isinstance(run, list):
            steps.extend(split_groups(program, run, consumers, needed))
        else:
            steps.append(run)
    return steps


def split_groups(
    program: Program, members: list[int], consumers: dict[int, list[int]], needed: set[int]
) -> list[FusedGroup]:
    """``members`` as one group, or as consecutive groups when one would take more
    arguments than a kernel may (values crossing a split are stored by the first)."""
    group = make_group(program, members, consumers, needed)
    if len(members) == 1 or 1 + len(group.kinds) <= MAX_FUSED_ARGUMENTS:  # index and kinds
        return [group]
    half = len(members) // 2
    return [
        *split_groups(program, members[:half], consumers, needed),
        *split_groups(program, members[half:], consumers, needed),
    ]


def origin(program: Program, node: int) -> int:
    """The node a (chain of) reshape(s) views."""
    while program.nodes[node].op == "reshape":
        node = program.nodes[node].inputs[0]
    return node


def make_group(
    program: Program, members: list[int], consumers: dict[int, list[int]], needed: set[int]
) -> FusedGroup:
    inside = set(members)
    shape = program.nodes[members[0]].shape
    inputs: list[int] = []
    scalars: list[int] = []
    names: dict[int, str] = {}
    statements: list[FusedStatement] = []
    for node_id in members:
        operands = []
        for source in program.nodes[node_id].inputs:
            if source not in names:
                if program.nodes[source].op in SCALARS:
                    names[source] = f"s{len(scalars)}"
                    scalars.append(source)
                else:
                    names[source] = f"a{len(inputs)}"
                    inputs.append(source)
            operands.append(names[source])
        names[node_id] = f"t{len(statements)}"
        statements.append((program.nodes[node_id].op, tuple(operands)))
    outputs = [
        node_id
        for node_id in members
        if node_id in needed or any(c not in inside for c in consumers[node_id])
    ]
    direct = tuple(program.nodes[node_id].shape == shape for node_id in inputs)
    body, name, kinds = fused_source(
        direct, len(scalars), statements, [names[node_id] for node_id in outputs]
    )
    return FusedGroup(
        tuple(members), shape, tuple(inputs), direct, tuple(scalars), tuple(outputs),
        body, name, kinds,
    )  # fmt: skip
