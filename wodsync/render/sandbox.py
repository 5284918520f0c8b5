"""The Jinja sandbox templates render in: a time budget that works in any thread, bounded values.

Templates come from pull requests and render in the CLI, the daemon and the session API, the
last two in worker threads. Jinja's sandbox stops a template from reaching Python internals but
not from running forever or allocating gigabytes, and the old SIGALRM budget only worked on the
main thread. Here:

- `within` runs a call under a watchdog timer that raises `RenderTimeout` in the rendering
  thread itself (`PyThreadState_SetAsyncExc`), whichever thread that is. It re-raises every
  `REFIRE_SECONDS` until the call is over (a template cannot swallow it for good), and never
  fires once the call has returned (see `_Watchdog`).
- Python only delivers that exception between bytecodes, so single C-level operations that
  allocate (`'a' * 10**10`, `10 ** 10**9`, `'x'.center(10**10)`, `~` and `+` doubling a string)
  are estimated before they run: no value may exceed `MAX_VALUE` bytes, and the new text a render
  builds is charged to a budget of `RENDER_BUDGET` bytes, so a loop cannot pile up many values
  just under the limit.
"""

from __future__ import annotations

import ctypes
import functools
import heapq
import itertools
import re
import string
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeVar

from jinja2 import StrictUndefined, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError
from jinja2.runtime import Macro, markup_join, str_join
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum

MAX_VALUE = 16 << 20
RENDER_BUDGET = 8 * MAX_VALUE
MAX_INT_BITS = 1 << 16
REFIRE_SECONDS = 0.1
MAX_DIGITS = 9  # a width or precision written with more digits is refused outright


T = TypeVar("T")


class RenderLimitError(Exception):
    """A template went past a limit of the sandbox (time, output or value size)."""


class RenderTimeout(RenderLimitError):
    """A template ran past its time budget."""


class OutputTooLarge(RenderLimitError):
    """A template produced more output than allowed."""


class ValueTooLarge(RenderLimitError):
    """A template built (or was about to build) a value larger than the sandbox allows."""


# -- The watchdog ------------------------------------------------------------------------------

# Own prototype rather than argtypes on the shared `ctypes.pythonapi` attribute.
_set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi))


class _Drained(BaseException):
    """Replaces a pending `RenderTimeout` and is caught at once (see `_drain`)."""


def _drain(ident: int) -> None:
    """Withdraw an asynchronous exception possibly pending for this thread.

    `PyThreadState_SetAsyncExc(id, NULL)` would clear it but leaves the interpreter's
    "async exception" signal set when nothing was pending, which slows every thread from then
    on. Replacing it with `_Drained` and letting it arrive inside this `try` clears both.
    """
    try:
        _set_async_exc(ident, _Drained)
        for _ in range(1_000_000):  # every backward jump checks for it
            pass
    except _Drained:
        return
    _clear_async_exc(ident, None)  # not delivered (no known CPython): clear it, slowly


_clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi))


class _Scheduler:
    """One daemon thread firing every watchdog when due (no thread per render)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.heap: list[tuple[float, int, _Watchdog]] = []
        self.seq = itertools.count()
        self.thread: threading.Thread | None = None

    def at(self, due: float, watchdog: _Watchdog) -> None:
        with self.cond:
            heapq.heappush(self.heap, (due, next(self.seq), watchdog))
            if self.thread is None or not self.thread.is_alive():  # first use, or forked
                self.thread = threading.Thread(target=self._loop, name="wodsync-watchdog",
                                               daemon=True)
                self.thread.start()
            self.cond.notify()

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.heap or self.heap[0][0] > time.monotonic():
                    self.cond.wait(self.heap[0][0] - time.monotonic() if self.heap else None)
                _, _, watchdog = heapq.heappop(self.heap)
            watchdog.fire()


_scheduler = _Scheduler()


class _Watchdog:
    """Raises `RenderTimeout` in thread `ident` while it runs `run`, once `seconds` passed.

    An asynchronous exception arrives at whatever bytecode the thread runs next, so two things
    keep it from ever landing outside the guarded call: the timer fires only while the thread's
    stack holds `run`'s own frame (checked from the scheduler thread), and disarming is a single
    C call, taking `token`, which the timer only ever tries without blocking. A template cannot
    swallow the exception for good either: it is raised again every `REFIRE_SECONDS`.
    """

    def __init__(self, ident: int, seconds: float) -> None:
        self.ident = ident
        self.token = threading.RLock()
        self.fired = False
        self.marker: FrameType | None = None
        _scheduler.at(time.monotonic() + seconds, self)

    def run(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        self.marker = sys._getframe()
        return fn(*args)

    def _inside(self) -> bool:
        frame = sys._current_frames().get(self.ident)
        while frame is not None:
            if frame is self.marker:
                return True
            frame = frame.f_back
        return False

    def fire(self) -> None:
        if not self.token.acquire(blocking=False):
            return  # disarmed
        try:
            if self.marker is not None and not self._inside():
                return  # the call is over (its disarm was interrupted): nothing to stop
            if self.marker is not None:
                self.fired = True
                _set_async_exc(self.ident, RenderTimeout)
            _scheduler.at(time.monotonic() + REFIRE_SECONDS, self)
        finally:
            self.token.release()

    def disarm(self) -> bool:
        """Stop firing for good and withdraw an exception not yet delivered; True when the
        timer had fired. Safe to call twice (the token is re-entrant)."""
        self.token.acquire()
        self.marker = None
        if self.fired:
            _drain(self.ident)
        return self.fired


def within(seconds: float, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)`, interrupted by `RenderTimeout` after `seconds`, in whichever thread."""
    watchdog = _Watchdog(threading.get_ident(), seconds)
    try:
        return watchdog.run(fn, args)
    except RenderTimeout:
        if watchdog.disarm():
            raise RenderTimeout(f"rendering took longer than {seconds:g} s") from None
        raise
    finally:
        watchdog.disarm()


# -- Sizes and the budget ----------------------------------------------------------------------

_scalar_sizes: dict[type, int] = {bool: 5, float: 24, type(None): 4}
NUMBERS = frozenset({int, float, bool})
PLAIN = frozenset({str, int, float, bool, type(None)})
_render = threading.local()


def measure(value: Any, limit: int = MAX_VALUE) -> int:
    """An estimate of the bytes `value` holds as text, counting shared parts each time they
    appear (that is how `str()` would spell them); stops early once past `limit`."""
    cls = type(value)
    if cls is str:
        return len(value)
    if cls is int:
        return value.bit_length() // 3 + 2
    total = 0
    stack = [value]
    while stack and total <= limit:
        v = stack.pop()
        if isinstance(v, str | bytes | bytearray):
            total += len(v)
        elif isinstance(v, int) and not isinstance(v, bool):
            total += v.bit_length() // 3 + 2
        elif isinstance(v, dict):
            total += 2 + 4 * len(v)
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list | tuple | set | frozenset):
            total += 2 + 4 * len(v)  # brackets, quotes and separators
            stack.extend(v)
        elif isinstance(v, Namespace):
            stack.append(object.__getattribute__(v, "_Namespace__attrs"))
        else:
            total += _scalar_sizes.get(type(v), 16)
    return total


@contextmanager
def render_budget(limit: int = RENDER_BUDGET) -> Iterator[None]:
    """Charge the text built in this thread to a budget of `limit` bytes for the block."""
    previous = getattr(_render, "left", None)
    _render.left = limit
    try:
        yield
    finally:
        _render.left = previous


def check_size(size: int, what: str) -> None:
    """Refuse a value of `size` bytes before it is built: over `MAX_VALUE`, or over the budget
    left to the render."""
    if size > MAX_VALUE:
        raise ValueTooLarge(f"{what} would be about {size} bytes; a template value is limited "
                            f"to {MAX_VALUE}")
    left = getattr(_render, "left", None)
    if left is not None and size > left:
        raise ValueTooLarge(f"{what}: the template built more than {RENDER_BUDGET} bytes of "
                            "text in one render")


def charge(size: int) -> None:
    left = getattr(_render, "left", None)
    if left is not None:
        _render.left = left - size


def checked(value: Any, what: str) -> Any:
    """`value` once its size is within limits (not charged: see `built`)."""
    check_size(measure(value), what)
    return value


def built(value: Any, what: str) -> Any:
    """`value`, newly built text or data, checked and charged to the render's budget."""
    size = measure(value)
    check_size(size, what)
    charge(size)
    return value


# -- Estimates of what an operation would build ------------------------------------------------

PERCENT_RE = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
DIGITS_RE = re.compile(r"\d+")


def _number(text: str | None, star: int) -> int:
    if not text:
        return 0
    if text == "*":
        return star
    return MAX_VALUE + 1 if len(text) > MAX_DIGITS else int(text)


def _values(args: Any) -> list[Any]:
    if isinstance(args, Mapping):
        return list(args.values())
    return list(args) if isinstance(args, tuple) else [args]


def _biggest(values: list[Any]) -> tuple[int, int]:
    """The largest text size among values and the largest int (a `*` width may use it)."""
    size = max((measure(v) for v in values), default=0)
    ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    return size, max(ints, default=0)


@functools.lru_cache(maxsize=512)
def _percent_fields(fmt: str) -> tuple[int, int, int]:
    """Conversions, their fixed widths and precisions (summed), and `*` fields of a format."""
    fields = fixed = stars = 0
    for m in PERCENT_RE.finditer(fmt):
        fields += 1
        for part in (m[1], m[2]):
            stars += part == "*"
            fixed += _number(part, 0)
    return fields, fixed, stars


def percent_size(fmt: Any, args: Any) -> int:
    """Upper estimate of `fmt % args` for a str `fmt`: widths and precisions count."""
    fields, fixed, stars = _percent_fields(fmt)
    size, star = _biggest(_values(args))
    return len(fmt) + fixed + fields * size + stars * star


def format_size(fmt: str, args: Iterable[Any], kwargs: Mapping[str, Any]) -> int:
    """Upper estimate of `fmt.format(*args, **kwargs)`; nested widths take the largest int."""
    size, star = _biggest([*args, *kwargs.values()])
    total = 0
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return len(fmt)  # the call itself reports the malformed format
    for literal, field, spec, _ in fields:
        total += len(literal)
        if field is not None:
            widths = sum(_number(d, star) for d in DIGITS_RE.findall(spec or ""))
            total += size + widths + (star * spec.count("{") if spec else 0)
    return total


def _replace_size(s: Any, old: Any, new: Any, count: Any = -1) -> int:
    n = s.count(old) if len(old) else len(s) + 1
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    return len(s) + n * max(len(new) - len(old), 0)


def _translate_size(s: Any, table: Any) -> int:
    longest = max((len(v) for v in table.values() if isinstance(v, str)), default=1)
    return len(s) * max(longest, 1)


def _pad_size(s: Any, width: Any, *_: Any) -> int:
    return max(len(s), width)


def _tabs_size(s: Any, tabsize: Any = 8) -> int:
    return len(s) + s.count("\t" if isinstance(s, str) else b"\t") * max(tabsize, 0)


STR_METHODS: dict[str, Callable[..., int]] = {
    "center": _pad_size, "ljust": _pad_size, "rjust": _pad_size, "zfill": _pad_size,
    "expandtabs": _tabs_size, "replace": _replace_size, "translate": _translate_size,
    "format": lambda s, *a, **k: format_size(s, a, k),
    "format_map": lambda s, m: format_size(s, (), m),
}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _indent_size(s: Any, width: Any = 4, *_: Any) -> int:
    text = _text(s)
    step = width if isinstance(width, int) else len(width)
    return len(text) + (text.count("\n") + 1) * max(step, 0)


def _wordwrap_size(s: Any, width: Any = 79, _long: Any = True, wrapstring: Any = None,
                   *_: Any) -> int:
    text = _text(s)
    lines = len(text) // max(width, 1) + text.count("\n") + 1
    return len(text) + lines * len(wrapstring or "\n")


def _fill_size(_value: Any, count: Any, fill_with: Any = None) -> int:
    return count * (8 + (measure(fill_with) if fill_with is not None else 0))


def _sum_size(_iterable: Any, _attribute: Any = None, start: Any = 0) -> int:
    if not isinstance(start, int | float):
        raise SecurityError("the sum filter adds numbers only in templates")
    return 0


FILTER_SIZES: dict[str, Callable[..., int]] = {
    "center": lambda value, width=80: len(_text(value)) + width,
    "indent": _indent_size,
    "format": lambda value, *args, **kwargs: percent_size(_text(value), kwargs or args),
    "replace": lambda s, old, new, count=None: _replace_size(_text(s), old, new,
                                                             -1 if count is None else count),
    "wordwrap": _wordwrap_size,
    "batch": _fill_size,
    "slice": _fill_size,
    "sum": _sum_size,
}
# Filters that pick a value out of their input rather than building text.
SELECTORS = frozenset({"default", "d", "first", "last", "attr", "random", "min", "max",
                       "length", "count"})
MUTATORS = frozenset({"append", "extend", "insert", "update", "setdefault", "add"})


def _estimate(estimator: Callable[..., int], *args: Any, **kwargs: Any) -> int:
    """The estimate, or 0 when the arguments are wrong (the call then raises its own error)."""
    try:
        return estimator(*args, **kwargs)
    except (TypeError, ValueError, AttributeError, OverflowError):
        return 0


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    # Filters marked pass_context/pass_eval_context/pass_environment get that first.
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    estimator = FILTER_SIZES.get(name)

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        own = args[skip:]
        for value in (*own, *kwargs.values()):
            checked(value, f"the input of filter '{name}'")
        if name == "join" and own:
            own = (list(own[0]), *own[1:])
            args = (*args[:skip], *own)
            items, sep = own[0], own[1] if len(own) > 1 else kwargs.get("d", "")
            check_size(measure(items) + len(items) * len(_text(sep)), "filter 'join'")
        if estimator is not None:
            check_size(_estimate(estimator, *own, **kwargs), f"filter '{name}'")
        result = func(*args, **kwargs)
        if name in SELECTORS or not isinstance(result, str | bytes | list | tuple | dict):
            return result
        return built(result, f"the result of filter '{name}'")

    return guarded


# -- The environment ---------------------------------------------------------------------------

class _BoundedCodeGenerator(CodeGenerator):
    """Compiles `~` to a size-checked join (Jinja's own `str_join` is not overridable)."""

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            markup = "context.eval_ctx.autoescape"
        else:
            markup = repr(bool(frame.eval_ctx.autoescape))
        self.write("environment.join_values((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(f"), {markup})")


def bounded_concat(parts: Iterable[str]) -> str:
    """`environment.concat` (macro and block bodies): the joined text is checked first."""
    parts = list(parts)
    size = sum(len(p) for p in parts)
    check_size(size, "a macro or block body")
    charge(size)
    return "".join(parts)


class BoundedSandbox(SandboxedEnvironment):
    """Jinja's sandbox plus `StrictUndefined` and the size checks described above."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    concat = staticmethod(bounded_concat)

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, keep_trailing_newline=True,
                         autoescape=False, finalize=self._output)
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}

    @staticmethod
    def _output(value: Any) -> Any:
        if type(value) in PLAIN:  # already built and checked; the output cap counts it
            return value
        return checked(value, "an output value")

    def join_values(self, values: tuple[Any, ...], markup: bool) -> str:
        size = 0
        for v in values:
            size += measure(v)
            check_size(size, "the joined text (~)")
        charge(size)
        return markup_join(values) if markup else str_join(values)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """The operator once its result is known to fit; the estimate is charged."""
        if type(left) in NUMBERS and type(right) in NUMBERS:
            if operator == "**":
                _power_size(left, right)
            elif operator == "*" and type(left) is int and type(right) is int:
                _int_size(left.bit_length() + right.bit_length())
            return self.binop_table[operator](left, right)
        size = _binop_size(operator, left, right)
        check_size(size, f"the result of '{operator}'")
        result = self.binop_table[operator](left, right)
        charge(size)
        return result

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        target = getattr(obj, "__wrapped__", obj)
        owner = getattr(target, "__self__", None)
        name = getattr(target, "__name__", "")
        if isinstance(owner, str | bytes | bytearray):
            return self._call_text_method(context, obj, owner, name, args, kwargs)
        if name in MUTATORS and isinstance(owner, list | dict | set):
            for value in (*args, *kwargs.values()):
                built(value, f"what {name}() stores")
        elif obj is generate_lorem_ipsum:
            check_size(_estimate(_lipsum_size, *args, **kwargs), "lipsum()")
        result = super().call(context, obj, *args, **kwargs)
        if isinstance(obj, Macro):
            return result
        return checked(result, f"the result of {name or 'a call'}()")

    def _call_text_method(self, context: Any, obj: Any, owner: Any, name: str,
                          args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        for value in (*args, *kwargs.values()):
            checked(value, f"an argument of {name}()")
        if name == "join" and args:
            items = list(args[0])
            check_size(measure(items) + len(items) * len(owner), "join()")
            args = (items, *args[1:])
        elif name in STR_METHODS:
            check_size(_estimate(STR_METHODS[name], owner, *args, **kwargs), f"{name}()")
        return built(super().call(context, obj, *args, **kwargs), f"the result of {name}()")


def _lipsum_size(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> int:
    return n * (max + 1) * 12 + (n * 20 if html else 0)


def _binop_size(operator: str, left: Any, right: Any) -> int:
    """Upper estimate of the result of an intercepted operator, before computing it."""
    if operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            return _int_size(left.bit_length() + right.bit_length())
        seq, times = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(times, int) and not isinstance(seq, int | float):
            budget = MAX_VALUE // max(times, 1) + 1
            return measure(seq, budget) * max(times, 0)
        return 0
    if operator == "**":
        return _power_size(left, right)
    if operator == "+":
        if isinstance(left, int | float) or isinstance(right, int | float):
            return 0
        return measure(left) + measure(right)
    if isinstance(left, str):  # "%" formatting
        return percent_size(left, right)
    return 0


def _power_size(base: Any, exponent: Any) -> int:
    if not (isinstance(base, int) and isinstance(exponent, int)) or exponent <= 0 \
            or base in (0, 1, -1):
        return 0
    return _int_size(base.bit_length() * exponent)


def _int_size(bits: int) -> int:
    if bits > MAX_INT_BITS:
        raise ValueTooLarge(f"an integer of about {bits} bits; a template integer is limited "
                            f"to {MAX_INT_BITS} bits")
    return bits // 3
