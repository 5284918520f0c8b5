"""Checking templates before they reach a student: syntax, undefined names, notebook JSON.

An undefined variable aborts a WoD CREATE in front of a student; here it is a located error in
the pull request instead. Each rendered file of a workshop, and each host system template, is
parsed, its free names are checked against the variables that will exist on every host it can
run on, and it is rendered once with sample values (notebooks must then be notebook JSON).
Templates are listed and read without following links (`repofs`): a link anywhere under
`templates/` or a workshop folder is reported at its path and never read through.

A workshop's hooks run as root and are never rendered (values reach them as data), so they are
not checked as templates; Jinja syntax in one is a `hook-template` error instead, at its place,
saying how the hook reads the value.

Secrets are placeholders here: CI has no secrets file. `validate --secrets FILE` adds the grant
check (`check_secret_grants`): each secret a workshop or host would be refused at render time is
a warning naming only the secret and the consumer, never a value or who else holds it.
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

from jinja2 import TemplateError, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError

# The module, not its names: render imports the catalog's models, so whichever of the two is
# imported first, this import must not need render's names yet.
from wodsync.render import jinja as render
from wodsync.render import seatvalues
from wodsync.catalog.loader import (
    TEMPLATES_DIR,
    WORKSHOP_FILE,
    WORKSHOPS_DIR,
    Catalog,
    link_or_special,
    repo_diagnostic,
    scan_tree,
)
from wodsync.catalog.models import Host, SecretRef
from wodsync.catalog.repofs import RepoFileError, read_repo_file, read_repo_text
from wodsync.diagnostics import Diagnostic
from wodsync.render.sandbox import RenderLimitError
from wodsync.secrets import Placeholders, Scope, SecretError, Secrets, merge_variables

SAMPLE_PASSWORD = "Sample-Pass1"
PLACEHOLDERS = Placeholders()
GRANT_CODE = "secret-not-granted"
HOOK_CODE = "hook-template"
# Jinja's delimiters closed on the same line. Not bash's `${#name}` (a length) nor a Go
# template's `{{.Field}}`/`{{ $x }}` (docker, kubectl): neither was ever Jinja, both are fine
# in a hook that nothing renders.
HOOK_JINJA_RE = re.compile(r"(?<!\$)\{\{(?!\s*[.$]).*?\}\}|\{%.*?%\}|(?<!\$)\{#.*?#\}")
PLAIN_NAME_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
SNIPPET = 60


def _name_position(source: str, name: str, lineno: int) -> int:
    lines = source.splitlines()
    if 0 < lineno <= len(lines):
        m = re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", lines[lineno - 1])
        if m:
            return m.start() + 1
    return 1


def _undefined(rel: str, source: str, ast: nodes.Template, free: set[str],
               contexts: Mapping[str, Mapping[str, Any]]) -> list[Diagnostic]:
    """One diagnostic per undefined name, at its first use, naming the hosts lacking it.

    A name missing everywhere is simply "not defined"; one missing on some hosts only (a host
    variable set on one hub but not on the failover) names those hosts.
    """
    lacking = {name: [h for h, ctx in contexts.items() if name not in ctx] for name in free}
    found = []
    for name, hosts in sorted(lacking.items()):
        if not hosts:
            continue
        use = next((n for n in ast.find_all(nodes.Name) if n.name == name), None)
        line = use.lineno if use else 1
        where = "" if len(hosts) == len(contexts) else " on host " + ", ".join(
            f"'{h}'" for h in hosts)
        found.append(Diagnostic(rel, line, _name_position(source, name, line),
                                "undefined-variable", f"'{name}' is not defined{where}"))
    return found


def _error_line(exc: BaseException, rel: str) -> int:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == rel]
    return frames[-1].lineno or 1 if frames else getattr(exc, "lineno", None) or 1


def _render_sample(rel: str, source: str, template: Any,
                   ctx: Mapping[str, Any]) -> tuple[str | None, list[Diagnostic]]:
    try:
        return render.render_text(template, ctx), []
    except SecurityError as exc:
        return None, [Diagnostic(rel, _error_line(exc, rel), 1, "template-unsafe", str(exc))]
    except RenderLimitError as exc:
        return None, [Diagnostic(rel, _error_line(exc, rel), 1, "template-runaway", str(exc))]
    except UndefinedError as exc:
        return None, [_lookup_undefined(rel, source, exc)]
    except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError) as exc:
        return None, [Diagnostic(rel, _error_line(exc, rel), 1, "template-render",
                                 f"rendering with sample values failed: {exc}")]


def _lookup_undefined(rel: str, source: str, exc: UndefinedError) -> Diagnostic:
    """An undefined key reached through a lookup such as `hostvars[...]['IP-WKSHP-X']`."""
    line = _error_line(exc, rel)
    m = re.search(r"has no attribute '([^']+)'", str(exc))
    if not m:
        return Diagnostic(rel, line, 1, "undefined-variable", str(exc))
    return Diagnostic(rel, line, _name_position(source, m[1], line), "undefined-variable",
                      f"'{m[1]}' is not defined (looked up by the template)")


def _notebook_problem(rel: str, text: str) -> Diagnostic | None:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return Diagnostic(rel, exc.lineno, exc.colno, "notebook-json",
                          f"not valid JSON once rendered: {exc.msg} "
                          "(position in the rendered notebook)")
    if not (isinstance(data, dict) and isinstance(data.get("cells"), list)
            and isinstance(data.get("nbformat"), int) and isinstance(data.get("metadata"), dict)):
        return Diagnostic(rel, 1, 1, "notebook-json",
                          "not a notebook: expected an object with cells, metadata and nbformat")
    return None


def check_template(rel: str, raw: bytes, contexts: Mapping[str, Mapping[str, Any]],
                   *, notebook: bool = False, varpass: bool = True) -> list[Diagnostic]:
    """Check one template against one context per host it renders on ('' when no host).

    `varpass=False` marks a workshop template, where using PASSSTU earns a warning.
    """
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [Diagnostic(rel, raw.count(b"\n", 0, exc.start) + 1, 1, "encoding",
                           "a rendered file must be UTF-8")]
    try:
        ast = render.environment().parse(source, name=rel, filename=rel)
    except TemplateSyntaxError as exc:
        return [Diagnostic(rel, exc.lineno or 1, 1, "template-syntax", exc.message or str(exc))]
    # find_undeclared_variables runs the code generator: compute the free names once.
    free = meta.find_undeclared_variables(ast) - set(render.environment().globals)
    problems = _undefined(rel, source, ast, free, contexts)
    if problems:
        return problems
    template = render.compile_template(ast, rel)
    text, problems = _render_sample(rel, source, template, next(iter(contexts.values())))
    if text is not None and notebook:
        bad = _notebook_problem(rel, text)
        problems = [bad] if bad else []
    if not varpass and "PASSSTU" in free:
        problems += _passstu_warning(rel, source, ast)
    return problems


def _passstu_warning(rel: str, source: str, ast: nodes.Template) -> list[Diagnostic]:
    """WoD documents PASSSTU for varpass workshops only; flag it without failing the catalog."""
    use = next(n for n in ast.find_all(nodes.Name) if n.name == "PASSSTU")
    return [Diagnostic(rel, use.lineno, _name_position(source, "PASSSTU", use.lineno),
                       "passstu-without-varpass",
                       "template uses PASSSTU but the workshop does not set varpass: true",
                       "warning")]


def _host_targets(catalog: Catalog, locations: list[str]) -> dict[str, Host | None]:
    targets: dict[str, Host | None] = {}
    for loc in locations:
        targets.update(sorted(catalog.hosts_in(loc).items()))
    return targets or {"": None}


def _merged(scope: Scope, catalog: Catalog, host: Host | None,
            own: Mapping[str, Any]) -> dict[str, Any]:
    """Sample variables; even the consumer's own secrets are only withheld (not refused) so a
    grant check renders on and finds every use."""
    return merge_variables(scope, catalog.variables, host.variables if host else {}, own)


def workshop_contexts(catalog: Catalog, key: str,
                      scope: Scope | None = None) -> dict[str, dict[str, Any]]:
    """Sample contexts of a workshop, one per host of its locations (secrets as `scope` gives
    them: placeholders by default)."""
    ws = catalog.workshops[key]
    scope = scope or PLACEHOLDERS.for_workshop(key)
    contexts = {}
    for name, host in _host_targets(catalog, [ws.location, *ws.alternate_locations]).items():
        pool = catalog.pools.get(host.pool) if host else next(iter(catalog.pools.values()), None)
        if pool is None:
            continue
        seat = render.seat_variables(key, ws, pool, ws.seats.first, SAMPLE_PASSWORD)
        address = host.address if host else "localhost"
        merged = _merged(scope, catalog, host, ws.variables)
        seat.update(_seat_values(catalog, ws, {**merged, **seat}))
        contexts[name] = render.workshop_context(key, ws, merged, seat, address)
    return contexts


def _seat_values(catalog: Catalog, ws: Any, context: Mapping[str, Any]) -> dict[str, Any]:
    """The first seat's per-seat values (hook values as placeholders); one that cannot be
    computed is the `seat-value` rule's error (`catalog.appliances`), here only a name."""
    try:
        return seatvalues.seat_values(catalog, ws, ws.seats.first, context, None)
    except seatvalues.SeatValueError:
        return {name: seatvalues.placeholder(name) for name in ws.seat_values}


def rendered_files(catalog: Catalog, key: str) -> list[str]:
    """The files of workshop `key` rendered for a seat: not `workshop.yaml`, not a hook."""
    hooks = set(render.hook_paths(catalog.workshops[key]).values())
    return [rel for rel in catalog.folders[key].files
            if render.is_rendered(rel) and rel != WORKSHOP_FILE and rel not in hooks]


def check_workshop_templates(catalog: Catalog) -> Iterator[Diagnostic]:
    """Every rendered file of every workshop against the contexts of its hosts, and every
    hook for Jinja syntax it would keep as is (hooks do not need the hosts to be valid)."""
    for key, ws in sorted(catalog.workshops.items()):
        for rel in sorted(set(render.hook_paths(ws).values())):
            if rel in catalog.folders[key].files:  # a missing one is `missing-script`
                yield from _check_repo_hook(catalog, f"{WORKSHOPS_DIR}/{key}/{rel}")
    if not catalog.complete("host", "students", "variables"):
        return
    for key, ws in sorted(catalog.workshops.items()):
        contexts = workshop_contexts(catalog, key)
        if not contexts:
            continue
        for rel in rendered_files(catalog, key):
            yield from _check_repo_template(catalog, f"{WORKSHOPS_DIR}/{key}/{rel}",
                                            contexts, notebook=rel.endswith(".ipynb"),
                                            varpass=ws.varpass)


def check_hook(rel: str, raw: bytes) -> list[Diagnostic]:
    """A located `hook-template` error for each Jinja expression, block or comment of a hook:
    hooks are never rendered, so it would reach root's script as written."""
    found = []
    text = raw.decode("utf-8", errors="replace")
    for n, line in enumerate(text.splitlines(), start=1):
        for m in HOOK_JINJA_RE.finditer(line):
            found.append(Diagnostic(rel, n, m.start() + 1, HOOK_CODE, _hook_message(m[0])))
    return found


def _hook_message(snippet: str) -> str:
    shown = snippet if len(snippet) <= SNIPPET else snippet[:SNIPPET - 1] + "…"
    plain = PLAIN_NAME_RE.fullmatch(snippet)
    if plain:
        return (f"hooks are not rendered: `{shown}` reaches the script as $WOD_{plain[1]} "
                f"(write \"$WOD_{plain[1]}\")")
    return (f"hooks are not rendered: `{shown}` would stay in the script as written; a hook "
            "reads values as data: $WOD_<NAME> in its environment, or the JSON file "
            "$WOD_VARIABLES")


def _check_repo_hook(catalog: Catalog, rel: str) -> list[Diagnostic]:
    try:
        raw = read_repo_file(catalog.root, rel)
    except RepoFileError as exc:
        return [repo_diagnostic(exc)]
    return check_hook(rel, raw)


def _check_repo_template(catalog: Catalog, rel: str, contexts: Mapping[str, Mapping[str, Any]],
                         **options: bool) -> list[Diagnostic]:
    try:
        raw = read_repo_file(catalog.root, rel)
    except RepoFileError as exc:
        return [repo_diagnostic(exc)]
    return check_template(rel, raw, contexts, **options)


def template_files(catalog: Catalog) -> tuple[list[str], list[Diagnostic]]:
    """The files under templates/ (relative to it) and the links or special files refused
    there, each link reported at its own path (`templates` itself is checked at load)."""
    if not catalog.templates_ok:
        return [], []
    return scan_tree(catalog.root, TEMPLATES_DIR, link_or_special)


def check_system_templates(catalog: Catalog) -> Iterator[Diagnostic]:
    """Every file under templates/ renders for every host (or with globals when none)."""
    if not catalog.complete("host", "students", "variables"):
        return
    targets: dict[str, Host | None] = dict(sorted(catalog.hosts.items())) or {"": None}
    contexts = {name: _system_context(catalog, name, host, PLACEHOLDERS.for_host(name))
                for name, host in targets.items()}
    files, problems = template_files(catalog)
    yield from problems
    for rel in files:
        yield from _check_repo_template(catalog, f"{TEMPLATES_DIR}/{rel}", contexts)


def _system_context(catalog: Catalog, name: str, host: Host | None,
                    scope: Scope) -> dict[str, Any]:
    return render.system_context(_merged(scope, catalog, host, {}), name or "example", host,
                                 catalog.pools.get(host.pool) if host else None)


# -- Grants (validate --secrets FILE) ----------------------------------------------------------


def check_secret_grants(catalog: Catalog, secrets: Secrets) -> Iterator[Diagnostic]:
    """A warning for each secret a workshop or host uses without the grant of `secrets`.

    A workshop's own `variables` are reported where they name the secret; a global or host
    variable where a template of the consumer first uses it (unused, it is simply withheld).
    Each (consumer, secret) is reported once.
    """
    if not catalog.complete("host", "students", "variables"):
        return
    checking = Placeholders.checking(secrets)
    for key in sorted(catalog.workshops):
        yield from _unique(_workshop_grants(catalog, key, checking.for_workshop(key)))
    for name, host in sorted(catalog.hosts.items()):
        yield from _unique(_host_grants(catalog, name, host, checking.for_host(name)))


def _unique(found: Iterator[Diagnostic]) -> Iterator[Diagnostic]:
    seen: set[str] = set()
    for d in found:
        if d.message not in seen:
            seen.add(d.message)
            yield d


def _workshop_grants(catalog: Catalog, key: str, scope: Scope) -> Iterator[Diagnostic]:
    doc = catalog.workshop_doc(key)
    for name, value in catalog.workshops[key].variables.items():
        if isinstance(value, SecretRef):
            try:
                scope.resolve(value)
            except SecretError as exc:
                yield doc.diag(GRANT_CODE, str(exc), "variables", name, severity="warning")
    contexts = workshop_contexts(catalog, key, scope)
    for rel in rendered_files(catalog, key):
        for ctx in contexts.values():
            yield from _refused(catalog, f"{WORKSHOPS_DIR}/{key}/{rel}", ctx)


def _host_grants(catalog: Catalog, name: str, host: Host, scope: Scope) -> Iterator[Diagnostic]:
    """The templates this host gets: the system files, and its hub's when wodsync manages it
    (`hub.token` is not a variable: the environment may serve it, CI cannot tell)."""
    ctx = _system_context(catalog, name, host, scope)
    templates = [f.template for f in catalog.system_files]
    if host.hub and host.hub.manage:
        templates += [spec.template for spec in host.hub.files()]
    for template in templates:
        yield from _refused(catalog, f"{TEMPLATES_DIR}/{template}", ctx)


def _refused(catalog: Catalog, rel: str, ctx: Mapping[str, Any]) -> list[Diagnostic]:
    """The grant refusal rendering `rel` meets, if any; every other problem is the template
    checks' to report."""
    try:
        source = read_repo_text(catalog.root, rel)
        render.render_text(render.compile_template(source, rel), ctx)
    except SecretError as exc:
        return [Diagnostic(rel, _error_line(exc, rel), 1, GRANT_CODE, str(exc), "warning")]
    except (RepoFileError, SecurityError, RenderLimitError, TemplateError, ArithmeticError,
            LookupError, TypeError, ValueError):
        pass
    return []
