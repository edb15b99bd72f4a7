"""Differential test: random structured-concurrency programs run on trio and on anyio_uring must
produce the same observable trace.

A program is a tree of blocks made of: sleeps, checkpoints, raising an exception, nested cancel
scopes (optional relative deadline, shield, cancelled before entry), nurseries with child
blocks, ``nursery.start()`` of a task into an enclosing nursery (it runs under the caller's
scopes until ``task_status.started()``), ``try/finally`` with a cleanup block (which can wait,
shielded or not), and actions on an enclosing scope from inside it (``cancel()``, moving its deadline,
toggling its shield).  Both runtimes run it on a mock clock that autojumps, and record
``(virtual time, task path, event)`` for every sleep that completes, every action, every scope and
nursery exit (with ``cancelled_caught`` and what escaped) and every task's end.

Determinism.  trio shuffles the order in which the tasks of one batch run, so events of the same
virtual instant are compared as a multiset, and programs are built so that no two tasks can
*race* at one instant:
* every duration (sleep, deadline, new deadline) is a distinct power of two, so two instants
  are equal only if they follow the same chain of durations;
* every action (raise, cancel, deadline or shield change) comes right after a sleep of its own,
  so it happens at an instant no other task can share (tasks woken *by* the action react to it
  synchronously, the same way on both runtimes).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dual import TRIO, URING, Lib

# ============================================================================ programs


@dataclass
class Sleep:
    slot: int
    seconds: float = 0.0


@dataclass
class Checkpoint:
    pass


@dataclass
class Raise:
    ident: int


@dataclass
class Cancel:
    target: int


@dataclass
class MoveDeadline:
    target: int
    slot: int
    seconds: float = 0.0


@dataclass
class SetShield:
    target: int
    value: bool


@dataclass
class Scope:
    ident: int
    deadline_slot: int | None
    shield: bool
    cancel_first: bool
    body: list[Any]
    seconds: float = 0.0


@dataclass
class Nursery:
    ident: int
    children: list[list[Any]]
    body: list[Any]


@dataclass
class Finally:
    ident: int
    body: list[Any]
    cleanup: list[Any]


@dataclass
class Start:
    ident: int
    target: int
    pre: list[Any]
    post: list[Any]


@dataclass
class Program:
    body: list[Any]
    slots: int = 0
    nodes: int = 0


@st.composite
def programs(draw: st.DrawFn) -> Program:
    ids = itertools.count(1)
    slots = itertools.count()
    budget = [draw(st.integers(min_value=6, max_value=24))]
    n_nodes = [0]

    def sleep() -> Sleep:
        return Sleep(next(slots))

    def action(enclosing: list[int]) -> list[Any]:
        kinds = ["raise"] + (["cancel", "cancel", "move", "shield"] if enclosing else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "raise":
            act: Any = Raise(next(ids))
        else:
            target = draw(st.sampled_from(enclosing))
            if kind == "cancel":
                act = Cancel(target)
            elif kind == "move":
                act = MoveDeadline(target, next(slots))
            else:
                act = SetShield(target, draw(st.booleans()))
        return [sleep(), act]  # the sleep gives the action an instant of its own

    def block(depth: int, enclosing: list[int], nurseries: tuple[int, ...] = ()) -> list[Any]:
        nodes: list[Any] = []
        for _ in range(draw(st.integers(min_value=2 if depth == 0 else 0, max_value=5))):
            if budget[0] <= 0:
                break
            budget[0] -= 1
            n_nodes[0] += 1
            kinds = ["scope", "scope", "nursery", "nursery", "finally"]
            if depth == 0:
                kinds += ["sleep"]  # the top level is mostly structure: that is where tasks interact
            else:
                kinds += ["sleep", "sleep", "checkpoint", "action"] + (["action"] * 2 if enclosing else [])
                if nurseries:
                    kinds.append("start")
                if depth >= 4:
                    kinds = kinds[5:]
            kind = draw(st.sampled_from(kinds))
            if kind == "sleep":
                nodes.append(sleep())
            elif kind == "checkpoint":
                nodes.append(Checkpoint())
            elif kind == "action":
                nodes.extend(action(enclosing))
            elif kind == "scope":
                ident = next(ids)
                deadline = next(slots) if draw(st.booleans()) else None
                shield = draw(st.booleans())
                cancel_first = draw(st.integers(min_value=0, max_value=3)) == 0
                body = block(depth + 1, [*enclosing, ident], nurseries)
                nodes.append(Scope(ident, deadline, shield, cancel_first, body))
            elif kind == "finally":
                ident = next(ids)
                body = block(depth + 1, enclosing, nurseries)
                nodes.append(Finally(ident, body, block(depth + 1, enclosing, nurseries)))
            elif kind == "start":
                # nursery.start() into an enclosing nursery: `pre` runs under the caller's
                # scopes until task_status.started(), `post` under the target nursery's
                ident = next(ids)
                target = draw(st.sampled_from(nurseries))
                home = enclosing[: enclosing.index(target) + 1]
                homes = nurseries[: nurseries.index(target) + 1]
                pre = block(depth + 1, enclosing, nurseries)
                nodes.append(Start(ident, target, pre, block(depth + 1, home, homes)))
            else:
                ident = next(ids)
                inner = [*enclosing, ident]
                inner_nurseries = (*nurseries, ident)
                n_children = draw(st.integers(min_value=1, max_value=3))
                children = [block(depth + 1, inner, inner_nurseries) for _ in range(n_children)]
                body = block(depth + 1, inner, inner_nurseries)
                nodes.append(Nursery(ident, children, body))
        return nodes

    prog = Program(block(0, []))
    prog.slots = next(slots)
    prog.nodes = n_nodes[0]
    # distinct powers of two, in an order hypothesis picks
    order = draw(st.permutations(range(prog.slots)))
    durations = [float(2**k) for k in order]

    def assign(nodes: list[Any]) -> None:
        for node in nodes:
            if isinstance(node, Sleep | MoveDeadline):
                node.seconds = durations[node.slot]
            elif isinstance(node, Scope):
                if node.deadline_slot is not None:
                    node.seconds = durations[node.deadline_slot]
                assign(node.body)
            elif isinstance(node, Nursery):
                for child in node.children:
                    assign(child)
                assign(node.body)
            elif isinstance(node, Finally):
                assign(node.body)
                assign(node.cleanup)
            elif isinstance(node, Start):
                assign(node.pre)
                assign(node.post)

    assign(prog.body)
    return prog


# ============================================================================ the interpreter


class Boom(Exception):
    pass


def shape(exc: BaseException | None, lib: Lib) -> Any:
    if exc is None:
        return None
    if isinstance(exc, lib.Cancelled):
        return "Cancelled"
    if isinstance(exc, Boom):
        return f"Boom{exc.args[0]}"
    if isinstance(exc, BaseExceptionGroup):
        return (type(exc).__name__, tuple(sorted((shape(e, lib) for e in exc.exceptions), key=repr)))
    return f"{type(exc).__name__}: {exc}"  # anything else is a bug in one of the two


@dataclass
class Interpreter:
    lib: Lib
    trace: list[tuple[float, str, tuple[Any, ...]]] = field(default_factory=list)
    scopes: dict[int, Any] = field(default_factory=dict)
    nurseries: dict[int, Any] = field(default_factory=dict)

    def record(self, path: str, *event: Any) -> None:
        self.trace.append((round(self.lib.current_time(), 6), path, event))

    async def main(self, prog: Program) -> None:
        await self.block(prog.body, "main")

    async def block(self, nodes: list[Any], path: str) -> None:
        lib = self.lib
        for node in nodes:
            if isinstance(node, Sleep):
                await lib.sleep(node.seconds)
                self.record(path, "woke", node.slot)
            elif isinstance(node, Checkpoint):
                await lib.checkpoint()
            elif isinstance(node, Raise):
                self.record(path, "raise", node.ident)
                raise Boom(node.ident)
            elif isinstance(node, Cancel):
                self.record(path, "cancel", node.target)
                self.scopes[node.target].cancel()
            elif isinstance(node, MoveDeadline):
                self.record(path, "move deadline", node.target, node.seconds)
                self.scopes[node.target].deadline = lib.current_time() + node.seconds
            elif isinstance(node, SetShield):
                self.record(path, "shield", node.target, node.value)
                self.scopes[node.target].shield = node.value
            elif isinstance(node, Scope):
                await self.scope(node, path)
            elif isinstance(node, Nursery):
                await self.nursery(node, path)
            elif isinstance(node, Start):
                value = await self.nurseries[node.target].start(self.started, node, f"{path}/s{node.ident}")
                self.record(path, "start returned", value)
            elif isinstance(node, Finally):
                try:
                    await self.block(node.body, path)
                finally:
                    self.record(path, "cleanup", node.ident)
                    await self.block(node.cleanup, path)
            else:  # pragma: no cover
                raise AssertionError(node)

    async def scope(self, node: Scope, path: str) -> None:
        lib = self.lib
        if node.deadline_slot is not None:
            scope = lib.CancelScope(deadline=lib.current_time() + node.seconds, shield=node.shield)
        else:
            scope = lib.CancelScope(shield=node.shield)
        if node.cancel_first:
            scope.cancel()
        self.scopes[node.ident] = scope
        try:
            with scope:
                await self.block(node.body, path)
        except BaseException as exc:
            self.record(path, "scope exit", node.ident, scope.cancelled_caught, shape(exc, lib))
            raise
        self.record(path, "scope exit", node.ident, scope.cancelled_caught, None)

    async def nursery(self, node: Nursery, path: str) -> None:
        lib = self.lib
        try:
            async with lib.open_nursery() as nursery:
                self.scopes[node.ident] = nursery.cancel_scope
                self.nurseries[node.ident] = nursery
                for i, child in enumerate(node.children):
                    nursery.start_soon(self.task, child, f"{path}/{node.ident}.{i}")
                await self.block(node.body, path)
        except BaseException as exc:
            self.record(path, "nursery exit", node.ident, shape(exc, lib))
            raise
        self.record(path, "nursery exit", node.ident, None)

    async def started(self, node: Start, path: str, *, task_status: Any) -> None:
        try:
            await self.block(node.pre, path)
            self.record(path, "started", node.ident)
            task_status.started(node.ident)
            await self.block(node.post, path)
        except BaseException as exc:
            self.record(path, "task end", shape(exc, self.lib))
            raise
        self.record(path, "task end", "ok")

    async def task(self, nodes: list[Any], path: str) -> None:
        try:
            await self.block(nodes, path)
        except BaseException as exc:
            self.record(path, "task end", shape(exc, self.lib))
            raise
        self.record(path, "task end", "ok")


def observe(lib: Lib, prog: Program) -> list[Any]:
    interp = Interpreter(lib)
    try:
        lib.run(interp.main, prog, clock=lib.MockClock(autojump_threshold=0))
        outcome: Any = "returned"
    except BaseException as exc:
        outcome = shape(exc, lib)
    trace = [(t, path, event) for t, path, event in interp.trace]
    # same instant: compare as a multiset (trio shuffles each batch)
    trace.sort(key=lambda item: (item[0], repr(item[1:])))
    return [*trace, ("run", outcome)]


# ============================================================================ the tests


# ANYIO_URING_DIFF_EXAMPLES=20000 explores with fresh random programs instead of the fixed set.
EXPLORE = int(os.environ.get("ANYIO_URING_DIFF_EXAMPLES", "0"))


@settings(
    max_examples=EXPLORE or 500,
    deadline=None,
    derandomize=not EXPLORE,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(programs())
def test_trio_and_anyio_uring_agree(prog: Program) -> None:
    expected = observe(TRIO, prog)
    assert observe(URING, prog) == expected


def nursery_program() -> Program:
    """A hand-written program exercising each node kind (checks the harness itself)."""
    return Program(
        [
            Scope(
                1,
                None,
                False,
                False,
                [
                    Nursery(
                        2,
                        [
                            [Sleep(0, 1.0), Cancel(1)],
                            [Scope(3, 4, True, False, [Sleep(1, 8.0)], seconds=4.0), Sleep(2, 2.0)],
                        ],
                        [Checkpoint(), Sleep(3, 16.0)],
                    )
                ],
            ),
            Sleep(5, 32.0),
            Raise(9),
        ]
    )


def test_harness_sees_the_interesting_events() -> None:
    trace = observe(URING, nursery_program())
    assert trace == observe(TRIO, nursery_program())
    events = [(t, path, ev) for t, path, ev in trace[:-1]]
    assert (1.0, "main/2.0", ("cancel", 1)) in events
    # the shielded scope ends by its own deadline at 4.0, after the cancel at 1.0 was hidden
    assert (4.0, "main/2.1", ("scope exit", 3, True, None)) in events
    assert (4.0, "main/2.1", ("task end", "Cancelled")) in events
    assert (4.0, "main", ("nursery exit", 2, ("BaseExceptionGroup", ("Cancelled", "Cancelled")))) in events
    assert (4.0, "main", ("scope exit", 1, True, None)) in events
    assert trace[-1] == ("run", "Boom9")


@pytest.mark.parametrize("lib", [TRIO, URING], ids=["trio", "uring"])
def test_programs_are_deterministic_per_runtime(lib: Lib) -> None:
    prog = nursery_program()
    assert observe(lib, prog) == observe(lib, prog)
