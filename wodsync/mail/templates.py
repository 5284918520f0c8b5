"""The mail templates: `catalog/mail/<kind>.txt.j2` and `<kind>.html.j2`, else the built-ins.

Why in the catalog: what a participant reads is the workshop authors' voice, changed in a pull
request and checked by `validate` like a notebook — undefined names located at `file:line:col`,
rendered once with sample values in the same sandbox as the workshops. A kind's text or HTML
part the repository does not have comes from the package (`wodsync/mail/templates/`), so a
repository with no `catalog/mail/` still sends good mails.

The first line of a text template is the subject: `Subject: …` (rendered too).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from wodsync.catalog.loader import link_or_special, repo_diagnostic, repo_folder, scan_tree
from wodsync.catalog.repofs import RepoFileError, read_repo_file
from wodsync.diagnostics import Diagnostic
from wodsync.store.outbox import KINDS

if TYPE_CHECKING:
    from wodsync.catalog.loader import Catalog

MAIL_DIR = "catalog/mail"
PARTS = ("txt", "html")
BUILTIN = "<built-in>"
SUBJECT_PREFIX = "Subject:"
MAX_TEMPLATE_BYTES = 256 * 1024


@dataclass(frozen=True)
class Source:
    """One template's text and where it comes from (`catalog/mail/…` or `<built-in>/…`)."""

    rel: str
    text: str

    @property
    def builtin(self) -> bool:
        return self.rel.startswith(BUILTIN)


@dataclass
class MailTemplates:
    """The template of every (kind, part), the repository's where it has one."""

    sources: dict[tuple[str, str], Source] = field(default_factory=dict)

    def source(self, kind: str, part: str) -> Source:
        return self.sources[(kind, part)]


def file_name(kind: str, part: str) -> str:
    return f"{kind}.{part}.j2"


def builtin(kind: str, part: str) -> Source:
    name = file_name(kind, part)
    text = resources.files("wodsync.mail").joinpath("templates", name).read_text("utf-8")
    return Source(f"{BUILTIN}/{name}", text)


def load_templates(catalog: Catalog) -> tuple[MailTemplates, list[Diagnostic]]:
    """The repository's mail templates over the built-ins, and what is wrong with its
    `catalog/mail/` folder (a link, an unknown file, a file that is not UTF-8)."""
    own: dict[tuple[str, str], Source] = {}
    problems: list[Diagnostic] = []
    if repo_folder(catalog, MAIL_DIR):
        files, problems = scan_tree(catalog.root, MAIL_DIR, _entry_problem)
        for name in files:
            found = _read(catalog, name)
            if isinstance(found, Diagnostic):
                problems.append(found)
            else:
                own[found[0]] = found[1]
    sources = {(kind, part): own.get((kind, part)) or builtin(kind, part)
               for kind in KINDS for part in PARTS}
    return MailTemplates(sources), problems


def _entry_problem(entry: os.DirEntry[str], depth: int) -> tuple[str, str] | None:
    if entry.is_dir(follow_symlinks=False) and not entry.is_symlink():
        return "unexpected-file", "catalog/mail/ holds template files only, no folders"
    return link_or_special(entry, depth)


def _read(catalog: Catalog, name: str) -> tuple[tuple[str, str], Source] | Diagnostic:
    rel = f"{MAIL_DIR}/{name}"
    known = {file_name(k, p): (k, p) for k in KINDS for p in PARTS}
    if name not in known:
        return Diagnostic(rel, 1, 1, "unknown-mail-template",
                          f"not a mail template: expected <kind>.txt.j2 or <kind>.html.j2 with "
                          f"kind one of {', '.join(KINDS)}")
    try:
        raw = read_repo_file(catalog.root, rel, max_bytes=MAX_TEMPLATE_BYTES)
        return known[name], Source(rel, raw.decode("utf-8"))
    except RepoFileError as exc:
        return repo_diagnostic(exc)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        return Diagnostic(rel, line, 1, "encoding", "a mail template must be UTF-8")


def split_subject(text: str) -> tuple[str | None, str]:
    """(`Subject:` of the first line, the rest) of a rendered text part."""
    first, _, rest = text.partition("\n")
    if first.startswith(SUBJECT_PREFIX):
        return first[len(SUBJECT_PREFIX):].strip(), rest.lstrip("\n")
    return None, text


def check_templates(catalog: Catalog) -> Iterator[Diagnostic]:
    """Every mail template of the repository, checked against the sample context of its
    kind (the built-ins are checked by wodsync's own tests)."""
    from wodsync.catalog.templates import check_template
    from wodsync.mail.compose import sample_context

    templates: MailTemplates | None = getattr(catalog, "mail_templates", None)
    if templates is None:
        return
    for (kind, part), source in sorted(templates.sources.items()):
        if source.builtin:
            continue
        ctx = sample_context(catalog, kind)
        found = check_template(source.rel, source.text.encode("utf-8"), {"": ctx})
        yield from found
        if part == "txt" and not found:
            yield from _subject_problem(source)


def _subject_problem(source: Source) -> Iterator[Diagnostic]:
    if not source.text.startswith(SUBJECT_PREFIX):
        yield Diagnostic(source.rel, 1, 1, "mail-subject",
                         "the first line of a text mail template is its subject: "
                         "`Subject: …`", "warning")


def catalog_variables(catalog: Catalog) -> Mapping[str, Any]:
    """The catalog's global variables that are plain values (never a secret)."""
    return {k: v for k, v in catalog.variables.items() if isinstance(v, str | int | float)}


def load_into(catalog: Catalog) -> None:
    """Called by the catalog loader: the mail settings (when `catalog/mail.yaml` exists) and
    templates, with their problems added to the catalog's diagnostics."""
    from wodsync.catalog.loader import _load
    from wodsync.mail.settings import MAIL_FILE, MailSettings

    catalog.mail = _load(catalog, MAIL_FILE, MailSettings, "mail", required=False)
    templates, problems = load_templates(catalog)
    catalog.mail_templates = templates
    catalog.diagnostics.extend(problems)

