"""Previews: a pull request's plan computed against published facts, blind to secrets.

A preview renders the catalog with placeholders for secrets, so a file that embeds a secret (the
hub's configuration, with its token) never matches the host: such a file is rendered twice with
two different placeholders to find it, its content is not compared (a note says so) and neither
is the digest of the hub's configuration it feeds. Everything else is planned exactly as the
live plan would.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from wodsync.authoring.facts import FactsDocument, FactsError, FactsSource, NoFacts
from wodsync.secrets import Consumer, Placeholders, Secrets, placeholder

if TYPE_CHECKING:
    from wodsync.engine.desired import DesiredHost
    from wodsync.engine.plan import HostPlan

@dataclass
class OtherPlaceholders(Placeholders):
    """Placeholders that differ from `Placeholders`: rendering with both tells the files whose
    content depends on a secret."""

    def value(self, name: str, consumer: Consumer, consumer_name: str) -> str:
        super().value(name, consumer, consumer_name)
        return placeholder(name) + " (another)"

    def hub_token(self, host: str, ref: Any) -> str:
        return placeholder(ref.secret) + " (another)"


@dataclass
class Preview:
    """A host's plan from its published facts, or why there is none."""

    host: str
    header: str = ""
    plan: HostPlan | None = None
    error: str | None = None
    missing: bool = False                            # no facts published for the host
    blind: list[str] = field(default_factory=list)   # files whose content embeds a secret

    def to_json(self, noops: bool = False) -> dict[str, Any]:
        return {"host": self.host, "preview": self.header, "error": self.error,
                "secret_files": self.blind,
                "plan": self.plan.to_json(noops=noops) if self.plan else None}


def secret_dependent(one: DesiredHost, other: DesiredHost) -> tuple[list[str], bool]:
    """Files whose rendering changed with the placeholders, and whether the digest of the hub's
    configuration did: what a preview cannot compare."""
    files_a, files_b = one.want.get("file") or {}, other.want.get("file") or {}
    paths = sorted(p for p, f in files_a.items()
                   if p in files_b and f.sha256 != files_b[p].sha256)
    hub_a, hub_b = one.want.get("service"), other.want.get("service")
    return paths, bool(hub_a and hub_b and hub_a.fingerprint != hub_b.fingerprint)


HUB_VERSION_ADDRESSES = ("package:pip/jupyterhub", "package:npm/")


def blind_to_secrets(plan: HostPlan, paths: list[str], hub_digest_blind: bool,
                     hub_paths: Iterable[str] = ()) -> HostPlan:
    """The plan without what placeholders cannot decide: a secret-bearing file whose content
    alone differs, and a hub restart nothing but the secrets explains."""
    from wodsync.engine.change import Action, Noop

    kept, noops = [], list(plan.noops)
    for c in plan.changes:
        reasons = c.detail.split("; ") if c.address.kind == "file" else []
        if c.address.name in paths and c.action == Action.UPDATE and \
                "content differs" in reasons:
            rest = [r for r in reasons if r != "content differs"]
            if not rest:
                noops.append(Noop(c.address, "content compared with placeholders: not known "
                                             "without the secrets"))
                continue
            c = replace(c, detail="; ".join([*rest, "content may differ: secrets not known"]))
        kept.append(c)
    if hub_digest_blind and not restart_explained(kept, set(hub_paths) - set(paths)):
        restarts = [c for c in kept if c.address.kind == "service" and c.action == Action.UPDATE]
        noops += [Noop(c.address, "fingerprint compared with placeholders: not known without "
                                  "the secrets") for c in restarts]
        kept = [c for c in kept if c not in restarts]
    if paths:
        plan.notes.append(
            f"{', '.join(paths)} embed{'s' if len(paths) == 1 else ''} secrets: compared with "
            "placeholders, so content is not compared here"
            + (", nor the hub's restart fingerprint" if hub_digest_blind else "")
            + "; a change to a template shows in `wodsync review`")
    return replace(plan, changes=kept, noops=noops)


def restart_explained(changes: list[Any], plain_hub_files: set[str]) -> bool:
    """Whether something placeholders do not touch moves the hub's configuration digest: a
    JupyterHub or proxy version, or the content of a hub file without secrets (its unit)."""
    from wodsync.engine.change import Action

    return any(str(c.address).startswith(HUB_VERSION_ADDRESSES) or
               (c.address.kind == "file" and c.address.name in plain_hub_files and
                (c.action == Action.CREATE or "content differs" in c.detail.split("; ")))
               for c in changes)


def hub_file_paths(catalog: Any, host: str) -> list[str]:
    hub = catalog.hosts[host].hub
    return [spec.path for spec in hub.files()] if hub and hub.manage else []


def preview_host(catalog: Any, doc: FactsDocument, secrets: Secrets | None = None,
                 allow_deletions: int | None = None) -> Preview:
    """One host's plan from its document: pure, no SSH. With placeholders (the default) what
    embeds a secret is not compared; with real secrets (an operator's own preview) all is."""
    from wodsync.engine.desired import desired_state
    from wodsync.engine.plan import plan_host

    secrets = secrets if secrets is not None else Placeholders()
    out = Preview(doc.host, doc.header())
    try:
        desired = desired_state(catalog, doc.host, secrets, doc.seats())
        plan = plan_host(desired, doc.facts, doc.digests, allow_deletions)
        if isinstance(secrets, Placeholders):
            other = OtherPlaceholders(entries=secrets.entries, source=secrets.source,
                                      check_grants=secrets.check_grants)
            out.blind, hub_digest_blind = secret_dependent(
                desired, desired_state(catalog, doc.host, other, doc.seats()))
            plan = blind_to_secrets(plan, out.blind, hub_digest_blind,
                                    hub_file_paths(catalog, doc.host))
    except (KeyError, TypeError, AttributeError) as exc:
        out.error = (f"host {doc.host}: the facts are incomplete or malformed "
                     f"({type(exc).__name__}: {exc}); not planned")
        return out
    except Exception as exc:  # a template or grant error: this host only, as a live plan does
        out.error = f"host {doc.host}: {exc}; not planned"
        return out
    out.plan = plan
    return out


def preview(catalog: Any, published: FactsSource, hosts: Iterable[str] = (),
            secrets: Secrets | None = None,
            allow_deletions: int | None = None) -> list[Preview]:
    """Previews of the chosen hosts (all of the catalog's when none), in name order."""
    published.open()
    out = []
    for name in sorted(set(hosts) or set(catalog.hosts)):
        try:
            doc = published.get(name)
        except NoFacts as exc:
            out.append(Preview(name, error=f"{exc}; not planned", missing=True))
            continue
        except FactsError as exc:
            out.append(Preview(name, error=f"host {name}: {exc}; not planned"))
            continue
        out.append(preview_host(catalog, doc, secrets, allow_deletions))
    return out

