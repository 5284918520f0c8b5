"""The render budget holds in any thread, and values cannot grow past the sandbox's limits.

The daemon and the session API render in worker threads, so every runaway is run on the main
thread, in a `threading.Thread` and in a `ThreadPoolExecutor`. The time budget is lowered to
half a second to keep the suite quick; a thread that is still running a minute later counts as
not stopped (a safety net so a regression fails instead of hanging the suite).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from wodsync.render import jinja as render
from wodsync.render.sandbox import (
    MAX_VALUE,
    OutputTooLarge,
    RenderTimeout,
    ValueTooLarge,
    within,
)

from helpers import only_error

PYDIR = "catalog/workshops/WKSHP-Python101"
SAFETY_NET = 60.0

RUNAWAY_LOOPS = ("{% for i in range(100000) %}{% for j in range(100000) %}"
                 "{% endfor %}{% endfor %}")
RUNAWAY_MACRO = ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}"
                 "{% endmacro %}{{ f(60) }}")
SLOW = {"nested loops without output": RUNAWAY_LOOPS,
        "exponential recursive macro": RUNAWAY_MACRO}
LARGE = {
    "string repetition": "{{ 'a' * 10**10 }}",
    "list repetition": "{{ ([0] * 10**9)|length }}",
    "power": "{{ 10 ** 100000000 }}",
    "squaring in a loop": "{% set ns = namespace(x=3) %}{% for i in range(64) %}"
                          "{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x > 0 }}",
    "doubling with ~": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
                       "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "doubling with +": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
                       "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
    "center filter": "{{ 'x'|center(10000000000) }}",
    "ljust method": "{{ 'x'.ljust(10000000000) }}",
    "format width": "{{ '{:>10000000000}'.format('x') }}",
    "percent width": "{{ '%10000000000s' % 'x' }}",
    "replace filter": "{{ ('x' * 1000)|replace('x', 'y' * 1000000) }}",
    "join separator": "{{ (['a'] * 100000)|join('x' * 1000) }}",
    "batch fill": "{{ [1]|batch(10**9, 'x')|list|length }}",
    "lipsum": "{{ lipsum(10**9) }}",
    "many values kept": "{% set l = [] %}{% set s = 'x' * 8000000 %}{% for i in range(100) %}"
                        "{% set _ = l.append(s|upper) %}{% endfor %}{{ l|length }}",
}
WAYS = ("main thread", "threading.Thread", "ThreadPoolExecutor")


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "RENDER_SECONDS", 0.5)


def _render(source: str) -> str:
    return render.render_text(render.compile_template(source, "runaway.j2"), {})


def run_in(way: str, fn: Callable[[], Any]) -> Any:
    """`fn()` on the main thread, a plain thread or a pool: its result or its exception."""
    if way == "main thread":
        return _outcome(fn)
    if way == "ThreadPoolExecutor":
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(_outcome, fn).result(timeout=SAFETY_NET)
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(_outcome(fn)), daemon=True)
    thread.start()
    thread.join(SAFETY_NET)
    assert not thread.is_alive(), "the render was not stopped"
    return box[0]


def _outcome(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # the test inspects what was raised
        return exc


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("name", sorted(SLOW))
def test_a_runaway_template_is_stopped_in_any_thread(quick, way, name):
    outcome = run_in(way, lambda: _render(SLOW[name]))
    assert isinstance(outcome, RenderTimeout), outcome
    assert "longer than 0.5 s" in str(outcome)


@pytest.mark.parametrize("way", WAYS[1:])
@pytest.mark.parametrize("name", sorted(LARGE))
def test_a_value_too_large_is_refused_before_it_is_built(quick, way, name):
    outcome = run_in(way, lambda: _render(LARGE[name]))
    assert isinstance(outcome, ValueTooLarge), outcome


def test_refusal_happens_before_allocating():
    """Under a 1 GiB address-space limit, `'a' * 10**10` would be a MemoryError if built."""
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
            "from wodsync.render import jinja as render\n"
            "from wodsync.render.sandbox import ValueTooLarge\n"
            "t = render.compile_template(\"{{ 'a' * 10**10 }}{{ 'b'.center(10**10) }}\", 'x')\n"
            "try:\n    render.render_text(t, {})\n"
            "except ValueTooLarge:\n    print('refused')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=SAFETY_NET)
    assert result.stdout.strip() == "refused", result.stderr


def test_output_is_still_capped():
    # The full time budget: with half a second, a loaded machine (xdist workers beside it)
    # reaches the deadline before the cap this test is about.
    outcome = run_in("threading.Thread", lambda: _render(
        "{% for i in range(100000) %}{{ 'x' * 200 }}{% endfor %}"))
    assert isinstance(outcome, OutputTooLarge), outcome


def test_values_up_to_the_limit_render():
    source = ("{% set s = 'x' * (" + str(MAX_VALUE) + " // 2) %}{{ (s ~ s)|length }} "
              "{{ '%05d|%-4s|' % (42, 'ab') }}{{ '{:>6}'.format('r') }} {{ 2 ** 64 }} "
              "{{ [1, 2, 3]|join(',') }} {{ 'a-b'|replace('-', '+') }} {{ 'x'|center(5) }}|")
    assert _render(source) == (f"{MAX_VALUE} 00042|ab  |     r 18446744073709551616 "
                               "1,2,3 a+b   x  |")


def test_a_swallowed_timeout_is_raised_again():
    """Code that catches the first RenderTimeout (as a GC callback would) is still stopped."""
    def stubborn() -> None:
        try:
            while True:
                pass
        except RenderTimeout:
            pass
        while True:
            pass

    outcome = run_in("threading.Thread", lambda: within(0.2, stubborn))
    assert isinstance(outcome, RenderTimeout), outcome


def test_no_timeout_escapes_a_finished_render():
    """Budgets that expire as renders finish never raise in the code that runs after them."""
    template = render.compile_template("{% for i in range(n) %}{{ i }}{% endfor %}", "race")
    stray: list[BaseException] = []
    timed_out: list[int] = []

    def work(seed: int) -> None:
        for k in range(300):
            try:
                ctx = {"n": 500 + (k * seed) % 12000}
                within(0.002 + (k % 5) * 0.001, lambda c=ctx: "".join(template.generate(c)))
            except RenderTimeout:
                timed_out.append(k)
            try:
                total = 0
                for i in range(2000):
                    total += i
            except RenderTimeout as exc:
                stray.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in (3, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SAFETY_NET)
    assert timed_out, "no budget expired: the test proves nothing"
    assert stray == []


def test_a_thread_renders_normally_after_a_timeout(quick):
    def twice() -> tuple[Any, str]:
        first = _outcome(lambda: _render(RUNAWAY_LOOPS))
        return first, _render("{% for i in range(3) %}{{ i }}{% endfor %}")

    first, second = run_in("threading.Thread", twice)
    assert isinstance(first, RenderTimeout) and second == "012"


def test_validate_in_a_worker_thread_reports_a_runaway(repo, quick):
    repo.write(f"{PYDIR}/slow.py", RUNAWAY_LOOPS)
    with ThreadPoolExecutor(max_workers=1) as pool:
        d = pool.submit(only_error, repo.root, "template-runaway").result(SAFETY_NET)
    assert (d.path, d.line, d.col) == (f"{PYDIR}/slow.py", 1, 1)


def test_a_huge_value_is_a_runaway_diagnostic(repo):
    repo.write(f"{PYDIR}/big.sh", "echo ok\necho {{ 'a' * 10**10 }}\n")
    d = only_error(repo.root, "template-runaway")
    assert (d.path, d.line) == (f"{PYDIR}/big.sh", 2) and "limited to" in d.message
