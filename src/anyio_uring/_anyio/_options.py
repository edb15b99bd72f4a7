"""Backend options: parsing ``backend_options`` and making the runner they describe."""

from __future__ import annotations

import sys
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
)
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .. import _entry, _fallback
from .._core import Clock, Runner
from .._errors import IoUringUnavailableError
from .._net import NetConfig
from .._net import configure as configure_net
from .._net._pool import DEFAULT_POOL_LIMIT
from .._ring import RingOptions

if TYPE_CHECKING:
    pass


T = TypeVar("T")


def callable_name(func: object, override: object = None) -> str:
    """anyio's task naming: ``str(override)`` if given, else ``module.qualname`` of ``func``."""
    if override is not None:
        return str(override)
    parts = [getattr(func, "__module__", None), getattr(func, "__qualname__", None)]
    return ".".join(part for part in parts if isinstance(part, str) and part)


OPTIONS = (
    "clock",
    "ring_options",
    "disable",
    "install_signal_handlers",
    "debug",
    "socket_receive",
    "receive_pool_limit",
    "compat",
    "fallback",
)


@dataclass(frozen=True, slots=True)
class RunSettings:
    """Parsed ``backend_options`` (see the module docstring)."""

    clock: Clock | None = None
    ring_options: RingOptions | None = None
    install_signal_handlers: bool = True
    debug: bool = False
    net: NetConfig = field(default_factory=NetConfig)
    compat: bool = True
    fallback: bool | None = None  # None: ask the environment (see _fallback.py)

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> RunSettings:
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise TypeError(
                f"unknown backend option(s) {', '.join(map(repr, unknown))} for the anyio backend "
                f"'uring'; valid options: {', '.join(OPTIONS)}"
            )
        clock = options.get("clock")
        if clock is not None and not all(
            callable(getattr(clock, name, None))
            for name in ("start_clock", "current_time", "deadline_to_sleep_time")
        ):
            raise TypeError(
                f"backend option 'clock' must be an anyio_uring clock (e.g. anyio_uring.MockClock()), "
                f"not {clock!r}"
            )
        ring_options = options.get("ring_options")
        if ring_options is not None and not isinstance(ring_options, RingOptions):
            raise TypeError(
                f"backend option 'ring_options' must be an anyio_uring.RingOptions, not {ring_options!r}"
            )
        disable = options.get("disable")
        if disable is not None:
            if isinstance(disable, str):
                names = frozenset(name.strip() for name in disable.split(",") if name.strip())
            else:
                names = frozenset(disable)
            base = ring_options if ring_options is not None else RingOptions()
            ring_options = replace(base, disable=base.disable | names)
        install = options.get("install_signal_handlers", True)
        debug = options.get("debug", False)
        compat = options.get("compat", True)
        fallback = options.get("fallback")
        for name, value in (("install_signal_handlers", install), ("debug", debug), ("compat", compat)):
            if not isinstance(value, bool):
                raise TypeError(f"backend option {name!r} must be a bool, not {value!r}")
        if fallback is not None and not isinstance(fallback, bool):
            raise TypeError(f"backend option 'fallback' must be a bool or None, not {fallback!r}")
        net = NetConfig(
            options.get("socket_receive", "auto"),
            options.get("receive_pool_limit", DEFAULT_POOL_LIMIT),
        )
        return cls(cast("Clock | None", clock), ring_options, install, debug, net, compat, fallback)

    def new_runner(self) -> Runner | IoUringUnavailableError:
        """The runner these settings describe, or the error that kept io_uring from being set up
        (the caller raises it or falls back: :meth:`falls_back`)."""
        runner = _entry.new_runner(self.clock, self.ring_options, self.install_signal_handlers)
        if not isinstance(runner, IoUringUnavailableError):
            configure_net(runner, self.net)
        return runner

    def falls_back(self, exc: IoUringUnavailableError) -> bool:
        """Whether the run that got ``exc`` from :meth:`new_runner` goes on on trio."""
        return _fallback.falls_back(exc, self.fallback)

    @contextmanager
    def debugging(self) -> Iterator[None]:
        if not self.debug:
            yield
            return
        old = sys.get_coroutine_origin_tracking_depth()
        sys.set_coroutine_origin_tracking_depth(max(old, 16))
        try:
            yield
        finally:
            sys.set_coroutine_origin_tracking_depth(old)


def coroutine_function(
    func: Callable[..., Awaitable[T]],
) -> Callable[..., Coroutine[Any, Any, T]]:
    """``func`` if it returns coroutines; else a wrapper that awaits whatever it returns.

    anyio accepts any callable returning an awaitable; the runtime's tasks run coroutines.
    """

    def call(*args: Any) -> Coroutine[Any, Any, T]:
        awaitable = func(*args)
        if isinstance(awaitable, Coroutine) or not isinstance(awaitable, Awaitable):
            return cast("Coroutine[Any, Any, T]", awaitable)  # a non-awaitable: the runtime reports it

        async def await_it() -> T:
            return await awaitable

        return await_it()

    return call
