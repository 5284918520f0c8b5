"""Session commands (`wodsync session …`) and the HTTP API server (`wodsync serve`).

They replace WoD's `wod-test-action.sh CREATE|CLEANUP|RESET|PURGE` for an author trying a
workshop: the same lifecycle the API runs, against the store and the hosts — or, with
`--api URL`, through a daemon's API (`wodsync.cli.remote`), printing the same text and JSON.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from wodsync.cli.common import db_option, load_secrets, main, root_option, say, secrets_option

if TYPE_CHECKING:
    from wodsync.cli.remote import Remote
    from wodsync.controller import Controller
    from wodsync.sessions.service import SessionService
    from wodsync.store import Session

STATES = ("creating", "active", "cleaning", "held", "resetting", "releasing", "ended",
          "failed")


def controller_options(f: Callable[..., Any], state_flag: bool = True) -> Callable[..., Any]:
    """--root, --state DIR (also --state-dir; `session list` filters with --state), --db,
    --secrets."""
    names = ("--state", "--state-dir") if state_flag else ("--state-dir",)
    f = click.option(*names, "state", type=click.Path(file_okay=False, path_type=Path),
                     help="Controller state folder (default: $WODSYNC_STATE, else "
                          "/var/lib/wodsync).")(f)
    f = db_option("SQLite at STATE/wodsync.db; postgresql+psycopg://… for PostgreSQL")(f)
    return root_option(secrets_option(f))


@contextmanager
def controller(root: Path, state: Path | None, db: str | None,
               secrets_file: Path | None) -> Iterator[Controller]:
    from wodsync.controller import open_controller
    from wodsync.store import StoreError

    try:
        ctl = open_controller(root, state, db, load_secrets(secrets_file))
    except (ValueError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        yield ctl
    finally:
        ctl.close()


def _session_json(ctl: Controller, s: Session, history: bool = False,
                  credentials: bool = True) -> dict[str, Any]:
    from wodsync.api.models import session_out as _out

    return _out(ctl.sessions, s, credentials=credentials, history=history).model_dump(
        mode="json")


def _print(data: dict[str, Any], as_json: bool) -> None:
    """A session as the API gives it (`SessionOut`), whichever back end answered: the same
    text and JSON from the store and from `--api`."""
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    creds = data.get("credentials") or {}
    p = data["participant"]
    rows = [("session", data["id"]), ("workshop", data["workshop"]), ("state", data["state"]),
            ("participant", f"{p['name']} <{p['email']}>"
                            + (f", {p['company']}" if p["company"] else "")),
            ("host", f"{data['host']} (location {data['location']}), seat {data['seat']}"),
            ("hub", data.get("hub_url") or "-")]
    if creds:
        rows += [("username", creds["username"]), ("password", creds["password"])]
    completion = data.get("completion")
    rows += [("ends", data.get("ends_at") or "-"),
             ("completion", f"{completion:g}%" if completion is not None else "-")]
    if data.get("score") is not None:
        rows.append(("score", f"{data['score']}/100"))
    if data.get("error"):
        rows.append(("error", data["error"]))
    if data.get("release"):
        r = data["release"]
        rows.append(("release", f"{r['operation']} pending after {r['attempts']} attempts, "
                                f"next at {r['next_attempt'] or 'once a daemon or serve runs'}"))
    for key, value in rows:
        click.echo(f"{key + ':':<12} {value}")
    for e in data.get("history", []):
        click.echo(f"  {e['at']}  {e['from_state'] or '-'} → {e['to_state']}: {e['message']}")
        for line in (e.get("output") or "").rstrip().splitlines():
            click.echo(f"      | {line}")  # what the hooks printed for this move


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc)) from None


def api_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--api URL (talk to a daemon's or `serve`'s API instead of the store and the catalog)
    and --token-file (else $WODSYNC_API_TOKEN; never a token on the command line)."""
    f = click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="With --api: a file whose first line is the API token (default: "
                          "$WODSYNC_API_TOKEN).")(f)
    return click.option("--api", metavar="URL", envvar="WODSYNC_API_URL", show_envvar=True,
                        help="The API of a daemon or `wodsync serve` (e.g. "
                             "http://127.0.0.1:8080): no catalog, store or root needed.")(f)


def _remote(api: str, token_file: Path | None) -> Remote:
    from wodsync.cli.remote import Remote, api_token

    return Remote(api, api_token(token_file))


@main.group("session")
def session_group() -> None:
    """Workshop sessions: create, list, show, cleanup, reset, purge, extend, check — on the store
    and the hosts, or through a daemon's API (--api URL)."""


@session_group.command("create")
@controller_options
@api_options
@click.argument("workshop")
@click.option("--email", required=True)
@click.option("--name", default="")
@click.option("--company", default="")
@click.option("--location", help="Force a location (default: the workshop's, then its "
                                 "alternates).")
@click.option("--json", "as_json", is_flag=True)
def create_cmd(root: Path, secrets_file: Path | None, state: Path | None, db: str | None,
               api: str | None, token_file: Path | None, workshop: str, email: str, name: str,
               company: str, location: str | None, as_json: bool) -> None:
    """CREATE: give a participant a seat of WORKSHOP; prints the credentials."""
    from pydantic import ValidationError

    from wodsync.api.models import ParticipantIn
    from wodsync.sessions.service import SessionError
    from wodsync.store import Participant, StoreError

    try:
        p = ParticipantIn(name=name, email=email, company=company)
    except ValidationError as exc:
        raise click.ClickException("invalid participant: " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    if api:
        started = time.monotonic()
        _, data = _remote(api, token_file).call("POST", "/api/v1/sessions", {
            "workshop": workshop, "participant": p.model_dump(), "location": location})
        seconds = time.monotonic() - started
    else:
        with controller(root, state, db, secrets_file) as ctl:
            try:
                created = ctl.sessions.create(workshop, Participant(p.name, p.email,
                                                                    p.company), location)
            except (SessionError, StoreError) as exc:
                _fail(exc)
            data, seconds = _session_json(ctl, created.session), created.seconds
    _print(data, as_json)
    if not as_json:
        say(f"seat ready in {seconds:.2f} s")


@session_group.command("list")
@lambda f: controller_options(f, state_flag=False)
@api_options
@click.option("--state", "filter_state", type=click.Choice(STATES), help="Only this state.")
@click.option("--workshop", help="Only this workshop.")
@click.option("--host", help="Only sessions on this host.")
@click.option("--email", help="Only this participant's (ignoring case).")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(root: Path, secrets_file: Path | None, state: Path | None, db: str | None,
             api: str | None, token_file: Path | None, filter_state: str | None,
             workshop: str | None, host: str | None, email: str | None, as_json: bool) -> None:
    """Sessions, oldest first, without credentials (`session show` has them)."""
    from wodsync.store import SessionState

    filters = {"state": filter_state, "workshop": workshop, "host": host, "email": email}
    if api:
        found = _all_pages(_remote(api, token_file), filters)
    else:
        with controller(root, state, db, secrets_file) as ctl:
            chosen = SessionState(filter_state) if filter_state else None
            found = [_session_json(ctl, s, credentials=False) for s in ctl.store.sessions.find(
                state=chosen, workshop=workshop, host=host, email=email)]
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    rows = [("SESSION", "STATE", "WORKSHOP", "USER", "HOST", "ENDS", "E-MAIL")]
    rows += [(s["id"], s["state"], s["workshop"], s["username"], s["host"],
              _short_time(s["ended_at"] or s["ends_at"]), s["participant"]["email"])
             for s in found]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False))
                   + "  " + row[-1])
    say(f"{len(found)} sessions")


def _all_pages(remote: Remote, filters: dict[str, str | None]) -> list[dict[str, Any]]:
    """Every session the filters select, page after page (the API gives at most 500 a page)."""
    found: list[dict[str, Any]] = []
    while True:
        _, page = remote.call("GET", "/api/v1/sessions", offset=len(found), limit=500,
                              **filters)
        found += page["items"]
        if not page["items"] or len(found) >= page["total"]:
            return found


def _short_time(at: str | None) -> str:
    """When a session ends (or ended), to the minute in UTC: `-` when it has no end yet."""
    from datetime import UTC, datetime

    return datetime.fromisoformat(at).astimezone(UTC).strftime("%Y-%m-%d %H:%MZ") if at \
        else "-"


@session_group.command("show")
@controller_options
@api_options
@click.argument("session_id")
@click.option("--json", "as_json", is_flag=True)
def show_cmd(root: Path, secrets_file: Path | None, state: Path | None, db: str | None,
             api: str | None, token_file: Path | None, session_id: str, as_json: bool) -> None:
    """One session, with its credentials and history."""
    from wodsync.store import StoreError

    if api:
        _, data = _remote(api, token_file).call("GET", f"/api/v1/sessions/{_quote(session_id)}")
    else:
        with controller(root, state, db, secrets_file) as ctl:
            try:
                data = _session_json(ctl, ctl.store.sessions.get(session_id), history=True)
            except StoreError as exc:
                _fail(exc)
    _print(data, as_json)


def _quote(session_id: str) -> str:
    import urllib.parse

    return urllib.parse.quote(session_id, safe="")


def _lifecycle(name: str, doc: str, call: Callable[[SessionService, str], Session],
               route: tuple[str, str]) -> None:
    @session_group.command(name, help=doc)
    @controller_options
    @api_options
    @click.argument("session_id")
    @click.option("--json", "as_json", is_flag=True)
    def command(root: Path, secrets_file: Path | None, state: Path | None, db: str | None,
                api: str | None, token_file: Path | None, session_id: str,
                as_json: bool) -> None:
        from wodsync.sessions.service import SessionError
        from wodsync.store import StoreError

        if api:
            method, path = route
            _, data = _remote(api, token_file).call(
                method, f"/api/v1/sessions/{_quote(session_id)}{path}")
        else:
            with controller(root, state, db, secrets_file) as ctl:
                try:
                    data = _session_json(ctl, call(ctl.sessions, session_id))
                except (SessionError, StoreError) as exc:
                    _fail(exc)
        _print(data, as_json)
        if data["state"] == "releasing":
            say("the seat's release did not finish on its host: pending, retried by the "
                "expiry loop of `wodsync daemon` or `wodsync serve` (or run this again)")
            sys.exit(1)
        if data["state"] == "failed":
            sys.exit(1)


_lifecycle("cleanup", "CLEANUP: cleanup hook, completion, seat freed (or held for RESET); "
                      "exit 1 while the release is pending on the host.",
           lambda sessions, sid: sessions.cleanup(sid), ("DELETE", ""))
_lifecycle("reset", "RESET a held seat: reset hook, seat freed.",
           lambda sessions, sid: sessions.reset(sid), ("POST", "/reset"))
_lifecycle("purge", "PURGE: lock, stop, kill, new hub identity, empty, free — from any state, "
                    "no hook; `ended` only once the host did it (exit 1 while pending).",
           lambda sessions, sid: sessions.purge(sid), ("POST", "/purge"))


@session_group.command("check")
@controller_options
@api_options
@click.argument("session_id")
@click.option("--json", "as_json", is_flag=True)
def check_cmd(root: Path, secrets_file: Path | None, state: Path | None, db: str | None,
              api: str | None, token_file: Path | None, session_id: str, as_json: bool) -> None:
    """Run the workshop's checks on an active session's seat: its score (0-100) and each
    step; exit 1 when the workshop has no checks or they could not run."""
    from wodsync.sessions.service import SessionError
    from wodsync.store import StoreError

    if api:
        _, data = _remote(api, token_file).call(
            "POST", f"/api/v1/sessions/{_quote(session_id)}/check")
    else:
        with controller(root, state, db, secrets_file) as ctl:
            try:
                scored = ctl.sessions.check(session_id)
            except (SessionError, StoreError) as exc:
                _fail(exc)
            data = {"session": ctl.store.sessions.get(session_id).id, **scored.as_dict()}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"score: {data['score']}/100")
    for step in data["steps"]:
        mark = "passed" if step["passed"] else "failed"
        why = f": {step['message']}" if step["message"] else ""
        click.echo(f"  {step['name']} ({step['points']} pt) {mark} in {step['seconds']:.2f} s"
                   f"{why}")


@session_group.command("extend")
@controller_options
@api_options
@click.argument("session_id")
@click.option("--hours", type=click.FloatRange(0, 168, min_open=True), required=True)
@click.option("--json", "as_json", is_flag=True)
def extend_cmd(root: Path, secrets_file: Path | None, state: Path | None, db: str | None,
               api: str | None, token_file: Path | None, session_id: str, hours: float,
               as_json: bool) -> None:
    """Move a session's end by HOURS (bounded)."""
    from wodsync.store import StoreError

    if api:
        _, data = _remote(api, token_file).call(
            "POST", f"/api/v1/sessions/{_quote(session_id)}/extend", {"hours": hours})
    else:
        with controller(root, state, db, secrets_file) as ctl:
            try:
                data = _session_json(ctl, ctl.sessions.extend(session_id, hours))
            except StoreError as exc:
                _fail(exc)
    _print(data, as_json)


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


@main.command("serve")
@controller_options
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="HOST:PORT.")
@click.option("--expiry-interval", type=click.FloatRange(1, 3600), default=30.0,
              show_default=True, help="Seconds between two expiry rounds.")
@click.option("--log-json", is_flag=True, help="One JSON object per log line.")
@click.option("--smtp", metavar="HOST:PORT", help="Send the mails to this SMTP server instead "
              "of catalog/mail.yaml's (a local relay, the demo's sink).")
def serve_cmd(root: Path, secrets_file: Path | None, state: Path | None, db: str | None,
              listen: str, expiry_interval: float, log_json: bool, smtp: str | None) -> None:
    """The HTTP API (sessions and the portal feed), the expiry loop and the mail sender (when
    the catalog has catalog/mail.yaml); /docs has the API. SIGHUP reads the secrets file and
    the API tokens again."""
    import uvicorn

    from wodsync.api.app import create_app
    from wodsync.api.deps import Context
    from wodsync.logs import setup_logging
    from wodsync.mail.sender import Sender
    from wodsync.reload import Reloader
    from wodsync.sessions.service import ExpiryLoop, Heartbeat

    address, port = parse_listen(listen)
    server = parse_listen(smtp) if smtp else None
    setup_logging(log_json)
    with controller(root, state, db, secrets_file) as ctl:
        heartbeat = Heartbeat(ctl.store)  # the other replicas leave this one's sessions alone
        heartbeat.start()
        recovered = ctl.sessions.recover()
        if recovered:
            say(f"recovered {len(recovered)} sessions a stopped process left half-way")
        context = Context(ctl.store, sessions=ctl.sessions,
                          api_token=lambda: ctl.secrets.controller("WODSYNC_API_TOKEN"))
        app = create_app(context)
        Reloader(ctl.secrets, context.token_book()).install()
        loop = ExpiryLoop(ctl.sessions, expiry_interval)
        loop.start()
        catalog = ctl.deployment.catalog
        sender = Sender(ctl.store, lambda: catalog, ctl.secrets, smtp=server)
        sender.start()
        try:
            uvicorn.run(app, host=address, port=port, log_level="warning", access_log=False,
                        log_config=None)  # setup_logging's format
        finally:
            sender.stop()
            loop.stop()
            heartbeat.stop()


@session_group.command("update")
@controller_options
@click.argument("session_id", required=False)
@click.option("--workshop", "workshops", multiple=True,
              help="Every active session of this workshop (repeatable).")
@click.option("--json", "as_json", is_flag=True)
def update_cmd(root: Path, secrets_file: Path | None, state: Path | None, db: str | None,
               session_id: str | None, workshops: tuple[str, ...], as_json: bool) -> None:
    """Live update: bring a session (or every active session of a workshop) to the deployed
    revision, keeping the student's edits; exit 1 when one was not updated."""
    from wodsync.sessions.liveupdate import report_lines
    from wodsync.store import StoreError

    if bool(session_id) == bool(workshops):
        raise click.UsageError("give a SESSION_ID or --workshop W, not both nor neither")
    with controller(root, state, db, secrets_file) as ctl:
        try:
            done = ctl.sessions.update([session_id] if session_id else None, list(workshops))
        except StoreError as exc:
            _fail(exc)
    if as_json:
        click.echo(json.dumps([{"session": u.session, "host": u.host, "revision": u.revision,
                                "ok": u.ok, "error": u.error, "skipped": u.skipped,
                                "files": u.files} for u in done], indent=2))
    for u in done if not as_json else []:
        why = u.error or u.skipped
        say(f"session {u.session} on {u.host}: " + (f"not updated: {why}" if why else
                                                      f"revision {u.revision[:12]}"))
        for line in report_lines(u.files):
            say("  " + line)
    if not done and not as_json:
        say("no active session to update")
    if any(u.error for u in done):
        sys.exit(1)
