"""Secrets scoped to what may see them: a `{secret: NAME}` reaches only the consumers it is
granted to.

Whatever is rendered into a student's home is readable by that student, and anyone can put
`{secret: HUB_AMER_TOKEN}` in a workshop's variables. So resolving a name is not enough: the
operator says, in a secrets file kept outside the repository (`--secrets FILE` or
`$WODSYNC_SECRETS`), which workshops and which hosts may use each secret:

```yaml
secrets:
  API101_TOKEN:
    value: "…"
    workshops: [WKSHP-API101]      # workshops whose templates may use it
  SMTP_PASSWORD:
    value: "…"
    services: [mail]               # parts of the controller that may use it (mail, …)
  HUB_EMEA_TOKEN:
    value: "…"
    hosts: [hub-emea]              # hosts whose system templates and hub may use it
```

`value` is a non-empty string (quote numbers); `workshops`, `hosts` and `services` (the
controller's own parts that read a catalog secret: `SERVICES`) are lists of names; any
other key is an error naming the file and line. The old flat format (`NAME: value`) is refused
with the way to convert it: read as it was, every secret would be granted to everyone again.

Rules:
- `{secret: NAME}` in the catalog resolves only from the secrets file, through a `Scope`:
  `Secrets.for_workshop(key)` or `Secrets.for_host(name)`; a secret not granted to that consumer
  raises `SecretError("secret X is not granted to workshop Y")`.
- A consumer's own variables (a workshop's `variables`) name their secrets themselves: one not
  granted is an error at once. Inherited layers (global, host) are shared by many consumers, so
  their secrets are *withheld* (`Withheld`) for a consumer without the grant: rendering fails
  with the same message only if a template of that consumer uses the variable.
- The environment serves only the controller's own secrets: `Secrets.controller(name)` for
  `WODSYNC_API_TOKEN`, `WODSYNC_WEBHOOK_SECRET` and `WODSYNC_FACTS_TOKEN`, and a host's hub token
  (`Secrets.hub_token`) under a name that says so (`HUB_EMEA_TOKEN`, `DEMO_HUB_TOKEN`: `HUB` and
  `TOKEN` words), else from the file when granted to that host. A host file naming
  `{secret: AWS_SECRET_ACCESS_KEY}` as its hub token gets nothing from the controller's
  environment.
- `Secrets.reload` (SIGHUP) reads the file again in place, so a rotated value (a hub token, the
  SMTP password, a legacy API token) is used without a restart; a broken file changes nothing.
- Validation and previews use `Placeholders`: no values; `Placeholders.checking(secrets)` keeps
  the grants (`validate --secrets FILE`) and refuses the same secrets, naming only the secret.

At the top of the package because the catalog's checks, rendering, the engine, the sessions,
the daemon, the authoring tools and the CLI all read secrets through it.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from jinja2 import StrictUndefined

# The catalog's checks import this module, and importing anything of `wodsync.catalog` runs the
# package (and those checks) first: the catalog is imported inside the functions that need it,
# so importing this module first works too.
if TYPE_CHECKING:
    from wodsync.catalog.models import SecretRef, VarValue
    from wodsync.catalog.yamlfile import Document

# Which sort of consumer reads a secret (its grants list workshops and hosts apart).
Consumer = Literal["workshop", "host", "service"]
# The controller's parts that may be granted a secret of the file by `services: [...]` (the
# mail sender's SMTP password, the badges' signing key).
SERVICES = ("mail", "badges")
CONTROLLER_SECRETS = ("WODSYNC_API_TOKEN", "WODSYNC_WEBHOOK_SECRET", "WODSYNC_FACTS_TOKEN",
                      "WODSYNC_ALERT_WEBHOOK_URL", "WODSYNC_ALERT_WEBHOOK_SECRET")
HUB_TOKEN_ENV = re.compile(r"(?:[A-Z0-9]+_)*HUB_(?:[A-Z0-9]+_)*TOKEN")
ENTRY_KEYS = ("value", "workshops", "hosts", "services")
GRANT_KEYS = ("workshops", "hosts", "services")
FORMAT_HINT = ("write it as\n  secrets:\n    NAME:\n      value: \"...\"\n"
               "      workshops: [WKSHP-...]   # and/or hosts: [...]")


class SecretError(Exception):
    """A secret that cannot be given: not set, not granted, or a broken secrets file; the
    message names the secret and the consumer (or the file and line)."""


@dataclass(frozen=True)
class Entry:
    """One secret of the file: its value (never in a repr: reprs reach logs) and who may use
    it."""

    value: str = field(repr=False)
    workshops: frozenset[str] = frozenset()
    hosts: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()

    def grants(self, consumer: Consumer, name: str) -> bool:
        granted = {"workshop": self.workshops, "host": self.hosts, "service": self.services}
        return name in granted[consumer]


class Withheld(StrictUndefined):
    """An inherited variable whose secret this consumer may not see. Any use in a template
    (printing, testing, iterating, comparing) raises the `SecretError` that withheld it; `is
    defined` is false and `default` replaces it, so the value never leaks."""

    __slots__ = ()


@dataclass(frozen=True)
class Scope:
    """The secrets one consumer (a workshop or a host) may see."""

    secrets: Secrets
    consumer: Consumer
    name: str

    def resolve(self, ref: SecretRef) -> str:
        return self.secrets.value(ref.secret, self.consumer, self.name)

    def lazy(self, ref: SecretRef) -> Any:
        """The value, or a `Withheld` that fails only where a template uses it."""
        try:
            return self.resolve(ref)
        except SecretError as exc:
            # jinja2 annotates `exc` as a TemplateRuntimeError class but only raises it with the
            # message: the SecretError itself must reach the caller, who names the secret.
            return Withheld(hint=str(exc), exc=SecretError)  # type: ignore[arg-type]


@dataclass
class Secrets:
    """The secrets file's entries and the controller's environment (for its own secrets);
    neither appears in a repr (a `DesiredContext` in a log or traceback shows no value)."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)
    entries: Mapping[str, Entry] = field(default_factory=dict, repr=False)
    source: Path | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> Secrets:
        """The file at `path` (else `$WODSYNC_SECRETS`); none at all means no catalog secret.
        OSError propagates for the caller to name the file."""
        if path is None and os.environ.get("WODSYNC_SECRETS"):
            path = Path(os.environ["WODSYNC_SECRETS"])
        if path is None:
            return cls()
        return cls(entries=parse_secrets_file(path, path.read_bytes()), source=path)

    def reload(self) -> int:
        """Read the file this was loaded from again (SIGHUP), in place: every part holding
        this object (the reconcile loop, the deployment, the sessions, the mail sender, the
        API) uses the new values from its next read. A broken file raises as `load` does and
        changes nothing. The environment is not read again: a process's own cannot change.
        Returns the number of secrets in the file."""
        if self.source is not None:
            self.entries = parse_secrets_file(self.source, self.source.read_bytes())
        return len(self.entries)

    def for_workshop(self, key: str) -> Scope:
        return Scope(self, "workshop", key)

    def for_host(self, name: str) -> Scope:
        return Scope(self, "host", name)

    def for_service(self, name: str) -> Scope:
        """The secrets granted to one of the controller's parts (`SERVICES`)."""
        if name not in SERVICES:
            raise SecretError(f"{name!r} is not a service of the controller: one of "
                              f"{', '.join(SERVICES)}")
        return Scope(self, "service", name)

    def value(self, name: str, consumer: Consumer, consumer_name: str) -> str:
        """The one check every catalog secret passes: in the file, and granted."""
        entry = self.entries.get(name)
        if entry is None:
            raise SecretError(f"secret {name} is not set ({self._where()})")
        if not entry.grants(consumer, consumer_name):
            raise SecretError(f"secret {name} is not granted to {consumer} {consumer_name}")
        return entry.value

    def hub_token(self, host: str, ref: SecretRef) -> str:
        """A host's hub token: from the environment under a hub token's name, else from the
        file when granted to `host`."""
        name = ref.secret
        if HUB_TOKEN_ENV.fullmatch(name) and self.env.get(name):
            return self.env[name]
        try:
            return self.value(name, "host", host)
        except SecretError as exc:
            hint = ("" if HUB_TOKEN_ENV.fullmatch(name) else
                    "; the environment serves hub tokens only under names like HUB_<NAME>_TOKEN")
            raise SecretError(f"hub token of host {host}: {exc}{hint}") from None

    def controller(self, name: str) -> str | None:
        """One of the controller's own secrets (`CONTROLLER_SECRETS`): the environment, else
        the file; None when set in neither."""
        if name not in CONTROLLER_SECRETS:
            raise SecretError(f"{name} is not one of the controller's own secrets "
                              f"({', '.join(CONTROLLER_SECRETS)})")
        if self.env.get(name):
            return self.env[name]
        entry = self.entries.get(name)
        return entry.value if entry else None

    def _where(self) -> str:
        if self.source is None:
            return "no secrets file: give --secrets FILE or set WODSYNC_SECRETS"
        return f"looked in {self.source}"


@dataclass
class Placeholders(Secrets):
    """Stand-in values for validation and previews: no credentials needed, nothing from the
    environment. `checking(secrets)` keeps the grants of a real file and refuses what they
    refuse, with a message naming only the secret and the consumer (it is printed in CI)."""

    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    check_grants: bool = False

    @classmethod
    def checking(cls, secrets: Secrets) -> Placeholders:
        return cls(entries=secrets.entries, source=secrets.source, check_grants=True)

    def value(self, name: str, consumer: Consumer, consumer_name: str) -> str:
        if self.check_grants:
            entry = self.entries.get(name)
            if entry is None or not entry.grants(consumer, consumer_name):
                raise SecretError(f"secret {name} is not granted to {consumer} {consumer_name}")
        return placeholder(name)

    def hub_token(self, host: str, ref: SecretRef) -> str:
        return placeholder(ref.secret)

    def controller(self, name: str) -> str | None:
        super().controller(name)
        return placeholder(name)


def placeholder(name: str) -> str:
    return f"<secret {name}>"


def merge_variables(scope: Scope, *inherited: Mapping[str, VarValue],
                    own: Mapping[str, VarValue] | None = None) -> dict[str, Any]:
    """Variables of several layers (global < host < own), later layers winning.

    Secrets of the `inherited` layers this consumer may not see are withheld (an error where
    used); the consumer's `own` layer named its secrets itself, so one it may not see is an
    error now.
    """
    from wodsync.catalog.models import SecretRef

    merged: dict[str, Any] = {}
    for layer in inherited:
        merged |= {k: scope.lazy(v) if isinstance(v, SecretRef) else v for k, v in layer.items()}
    for k, v in (own or {}).items():
        merged[k] = scope.resolve(v) if isinstance(v, SecretRef) else v
    return merged


# -- The file ----------------------------------------------------------------------------------


def parse_secrets_file(path: Path, raw: bytes) -> dict[str, Entry]:
    """The entries of a secrets file, or a `SecretError` naming the file and line."""
    from wodsync.catalog.yamlfile import parse_yaml

    doc = parse_yaml(str(path), raw, allow_tabs=True)
    if doc.diagnostics:
        d = doc.diagnostics[0]
        raise SecretError(f"secrets file {path} is not valid YAML: line {d.line}: {d.message}")
    tree = doc.tree
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise _located(doc, "a secrets file is a mapping with one key, `secrets`")
    if "secrets" not in tree and tree and all(_scalar(v) for v in tree.values()):
        raise _located(doc, "this is the old flat format (NAME: value), which granted every "
                            "secret to everyone; give each secret the workshops or hosts that "
                            f"may use it: {FORMAT_HINT}")
    for key in tree:
        if key != "secrets":
            raise _located(doc, f"unknown key {key!r}{_did_you_mean(key, ['secrets'])}; "
                                f"{FORMAT_HINT}", key, key=True)
    body = tree["secrets"]
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise _located(doc, "`secrets` is a mapping of NAME: {value, workshops, hosts}",
                       "secrets")
    return {str(name): _entry(doc, name, spec) for name, spec in body.items()}


def _scalar(value: Any) -> bool:
    return not isinstance(value, dict | list)


def _entry(doc: Document, name: Any, spec: Any) -> Entry:
    from wodsync.catalog.models import SECRET_NAME_RE

    at = ("secrets", name)
    if not isinstance(name, str) or not re.match(SECRET_NAME_RE, name):
        raise _located(doc, f"secret name {name!r} must match {SECRET_NAME_RE}", *at, key=True)
    if not isinstance(spec, dict):
        raise _located(doc, f"secret {name}: expected a mapping (value, workshops, hosts), "
                            "e.g. `value: \"...\"` on the next line", *at)
    for key in spec:
        if key not in ENTRY_KEYS:
            raise _located(doc, f"secret {name}: unknown key {key!r}"
                                f"{_did_you_mean(key, ENTRY_KEYS)} (keys: "
                                f"{', '.join(ENTRY_KEYS)})", *at, key, key=True)
    if "value" not in spec:
        raise _located(doc, f"secret {name} has no value", *at, key=True)
    value = spec["value"]
    if not isinstance(value, str):
        raise _located(doc, f"secret {name} value must be a string (quote it)", *at, "value")
    if not value:
        raise _located(doc, f"secret {name} has an empty value", *at, "value")
    grants = {key: _grant(doc, name, key, spec.get(key)) for key in GRANT_KEYS}
    return Entry(str(value), grants["workshops"], grants["hosts"], grants["services"])


def _grant(doc: Document, name: str, key: str, names: Any) -> frozenset[str]:
    from wodsync.catalog.models import NAME_RE, WORKSHOP_KEY_RE

    pattern = WORKSHOP_KEY_RE if key == "workshops" else NAME_RE
    at = ("secrets", name, key)
    if key == "services":
        pattern = "^(" + "|".join(SERVICES) + ")$"
    if names is None:
        return frozenset()
    if not isinstance(names, list):
        raise _located(doc, f"secret {name}: {key} is a list, e.g. {key}: [...]", *at)
    for i, item in enumerate(names):
        if not isinstance(item, str) or not re.match(pattern, item):
            raise _located(doc, f"secret {name}: {key} entry {item!r} must match {pattern}",
                           *at, i)
    return frozenset(str(item) for item in names)


def _did_you_mean(word: Any, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _located(doc: Document, message: str, *loc: Any, key: bool = False) -> SecretError:
    line, _ = doc.at(*loc, key=key)
    return SecretError(f"secrets file {doc.rel}, line {line}: {message}")
