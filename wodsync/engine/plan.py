"""The plan: a pure function of desired state and facts, printable, saveable, applicable.

Like Terraform's plan it is a value: per host, changes (`+` create, `~` update, `-` delete) on
typed addresses with the data to apply them, the no-ops with their reasons (`plan --verbose`),
notes and errors, and the digests of the facts it was made from. It never touches a host, so
every rule about what wodsync may do — only inventoried things are deleted, homes with files
are kept, mass deletion needs explicit consent — is decided here and tested without SSH. A plan
holds no secret, so it can be saved, reviewed and applied as reviewed (`planfile`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from wodsync.engine.change import Action, Address, Change, Noop, data_from_json
from wodsync.engine.desired import DesiredHost
from wodsync.engine.kinds import BY_ADDRESS, KINDS
from wodsync.engine.kinds.base import PlanContext

DELETE_RATIO = 0.10
DELETE_MAX = 50


def deletion_cap(managed: int) -> int:
    """At most 10 % of managed accounts or 50, whichever is smaller (at least 1 if any)."""
    return min(DELETE_MAX, max(1, int(managed * DELETE_RATIO))) if managed else 0


@dataclass
class HostPlan:
    host: str
    changes: list[Change] = field(default_factory=list)
    noops: list[Noop] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    refused: str | None = None
    digests: dict[str, str] = field(default_factory=dict)
    # live sessions whose workshop left the catalog: ended before the plan is applied
    ending: list[str] = field(default_factory=list)

    def count(self, action: Action) -> int:
        return sum(c.action == action for c in self.changes)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def by_kind(self, kind: str) -> list[Change]:
        return [c for c in self.changes if kind == BY_ADDRESS[c.address.kind].KIND]

    def summary(self) -> dict[str, int]:
        return {a.value: self.count(a) for a in Action}

    def pending(self, limit: int = 5) -> str:
        """The changes, named, for a one-line message: "2 changes still pending" alone does
        not say where to look."""
        named = ", ".join(f"{c.action.symbol} {c.address}" for c in self.changes[:limit])
        more = len(self.changes) - limit
        return named + (f" and {more} more" if more > 0 else "")

    def to_json(self, noops: bool = False) -> dict[str, Any]:
        out = {"host": self.host, "refused": self.refused, "notes": self.notes,
               "errors": self.errors, "changes": [c.to_json() for c in self.changes],
               "summary": self.summary(), "digests": self.digests, "ending": self.ending}
        if noops:
            out["noops"] = [{"address": str(n.address), "reason": n.reason}
                            for n in self.noops]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostPlan:
        changes = []
        for c in data["changes"]:
            address = Address.parse(c["address"])
            module = BY_ADDRESS.get(address.kind)
            if module is None:
                raise ValueError(f"unknown resource kind in plan: {address.kind}")
            changes.append(Change(Action(c["action"]), address, c.get("detail", ""),
                                  data_from_json(module.DATA, c.get("data"))))
        return cls(data["host"], changes, [], list(data.get("notes", [])),
                   list(data.get("errors", [])), data.get("refused"),
                   dict(data.get("digests", {})), list(data.get("ending", [])))


def _refusal(plan: HostPlan, managed: int, allow_deletions: int | None) -> str | None:
    deletions = sum(c.action == Action.DELETE and c.address.kind == "account"
                    for c in plan.changes)
    cap = deletion_cap(managed)
    limit = cap if allow_deletions is None else allow_deletions
    if deletions <= limit:
        return None
    return (f"plan deletes {deletions} accounts; the cap is {limit} (10 % of {managed} managed "
            f"accounts, at most {DELETE_MAX}); rerun with --allow-deletions {deletions} if "
            "intended")


def _ending_refusal(ending: list[tuple[str, str, str]], allow_deletions: int | None,
                    ) -> str | None:
    """Live sessions of a workshop the catalog no longer has are never dropped by accident:
    they need an explicit allowance (and are then ended, CLEANUP, before the plan applies)."""
    if not ending or (allow_deletions is not None and allow_deletions >= len(ending)):
        return None
    named = ", ".join(f"{s} ({w}, seat {u})" for s, w, u in ending[:10])
    more = f" and {len(ending) - 10} more" if len(ending) > 10 else ""
    return (f"{len(ending)} live sessions belong to workshops no longer in the catalog: "
            f"{named}{more}; end them first (wodsync session cleanup ID) or allow it "
            f"(--allow-deletions {len(ending)}, or the commit trailer 'Wodsync-Allow-Deletions: "
            f"{len(ending)}'), which ends them before the change is applied")


def plan_host(desired: DesiredHost, facts: dict[str, Any], digests: dict[str, str] | None = None,
              allow_deletions: int | None = None) -> HostPlan:
    """Diff one host, kind by kind in registry order; refuse past the deletion cap."""
    ctx = PlanContext(desired.name, desired.want, facts)
    for kind, module in KINDS.items():
        if kind in desired.want:
            module.diff(ctx)
    plan = HostPlan(desired.name, ctx.changes, ctx.noops, ctx.notes, ctx.errors,
                    digests=dict(digests or {}),
                    ending=[s for s, _, _ in ctx.ending_sessions if s != "?"])
    managed = len(facts.get("account", {}).get("managed", []))
    refusals = [*ctx.refusals, _refusal(plan, managed, allow_deletions),
                _ending_refusal(ctx.ending_sessions, allow_deletions)]
    plan.refused = "; ".join(r for r in refusals if r) or None
    return plan


def _grouped(changes: list[Change]) -> dict[tuple[str, str], list[Change]]:
    groups: dict[tuple[str, str], list[Change]] = {}
    for c in changes:
        groups.setdefault((c.action.value, c.address.kind), []).append(c)
    return groups


def render_text(plans: list[HostPlan], limit: int = 20, verbose: bool = False) -> str:
    """Terraform-like text; long runs of one kind are summarised (use --json for all)."""
    out = []
    for p in plans:
        out.append(f"host {p.host}:" + ("" if p.changes else " no changes"))
        for (_, kind), changes in _grouped(p.changes).items():
            out.extend(c.line() for c in changes[:limit])
            if len(changes) > limit:
                out.append(f"    … and {len(changes) - limit} more {kind} changes")
        if verbose:
            out.extend(n.line() for n in p.noops)
        out.extend(f"  ! {n}" for n in p.notes)
        out.extend(f"  ERROR: {e}" for e in p.errors)
        if p.refused:
            out.append(f"  REFUSED: {p.refused}")
    totals = Counter(c.action for p in plans for c in p.changes)
    out.append(f"Plan: {totals[Action.CREATE]} to create, {totals[Action.UPDATE]} to change, "
               f"{totals[Action.DELETE]} to delete.")
    return "\n".join(out)


def render_markdown(plans: list[HostPlan], limit: int = 50, header: str = "") -> str:
    """The plan for a pull request: per host a table of counts, then the changes."""
    out = [header] if header else []
    out += ["| host | + create | ~ change | - delete | status |", "|---|---|---|---|---|"]
    for p in plans:
        status = "refused" if p.refused else "errors" if p.errors else \
            "changes" if p.changes else "no changes"
        out.append(f"| `{p.host}` | {p.count(Action.CREATE)} | {p.count(Action.UPDATE)} | "
                   f"{p.count(Action.DELETE)} | {status} |")
    for p in plans:
        if not (p.changes or p.errors or p.notes or p.refused):
            continue
        out += ["", f"### `{p.host}`", "", "```diff"]
        for (_, kind), changes in _grouped(p.changes).items():
            out += [c.line().replace("  ~", "! ~", 1).lstrip() if c.action == Action.UPDATE
                    else c.line().lstrip() for c in changes[:limit]]
            if len(changes) > limit:
                out.append(f"# … and {len(changes) - limit} more {kind} changes")
        out.append("```")
        out += [f"- note: {n}" for n in p.notes]
        out += [f"- **error**: {e}" for e in p.errors]
        if p.refused:
            out.append(f"- **refused**: {p.refused}")
    return "\n".join(out)
