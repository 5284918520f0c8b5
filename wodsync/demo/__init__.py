"""`wodsync demo`: the GitOps loop on this machine, from the example catalog, in one command.

The demo writes a git repository of the example catalog with this machine as a `local` host,
starts `wodsync daemon` following it (in a session of its own, as the hub), waits until the
daemon has converged the host — account, system file, the hub environment from PyPI,
configurable-http-proxy from npm, the hub, hub users and groups — and creates a session for a
demo participant through the daemon's API: the same CREATE the portal would make. It prints the
hub URL and the credentials, the API URL and its token, the registration page and the Maildir
where a local SMTP sink keeps the demo's mails (`demo/mail.py`), and the repository: commit
there and the daemon deploys it. A rerun finds everything running and the same live session;
`--stop` stops the daemon, the mail sink, the students' servers, the hub and its proxy.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wodsync.demo import daemon, mail
from wodsync.demo.repo import (
    DEMO_EMAIL,
    HOST,
    DemoError,
    DemoOptions,
    choose_location,
    commit,
    demo_workshop,
    ensure_npm,
    validated,
    write_repo,
    write_secrets,
)
from wodsync.progress import Progress

__all__ = ["DemoError", "DemoOptions", "DemoResult", "lines", "run_demo", "stop_demo"]


@dataclass(frozen=True)
class DemoResult:
    url: str
    username: str
    password: str
    workshop: str
    state: Path
    root: Path
    session: str
    api: str
    api_token: str
    register: str
    mailbox: Path

    def to_json(self) -> dict[str, str]:
        return {"url": self.url, "username": self.username, "password": self.password,
                "state": str(self.state), "root": str(self.root), "session": self.session,
                "api": self.api, "api_token": self.api_token, "repo": str(self.root),
                "register": self.register, "mailbox": str(self.mailbox)}


def _api(opts: DemoOptions, secrets_file: Path) -> daemon.Api:
    from wodsync.secrets import Secrets

    secrets = Secrets.load(secrets_file)
    return daemon.Api(f"http://127.0.0.1:{opts.api_port}",
                      secrets.controller("WODSYNC_API_TOKEN") or "")


def _session(api: daemon.Api, workshop: str) -> dict[str, Any]:
    """A CREATE through the API; a rerun gets the participant's live session back: the 409
    names it (never its credentials), and the operator's token reads it."""
    code, body = api.call("POST", "/api/v1/sessions", {
        "workshop": workshop, "participant": {"name": "Demo participant", "email": DEMO_EMAIL,
                                              "company": "wodsync demo"}})
    if code == 201:
        return body
    if code == 409 and body and body.get("session"):
        code, body = api.call("GET", f"/api/v1/sessions/{body['session']['id']}")
        if code == 200:
            return body
    raise DemoError(f"the demo session could not be created (HTTP {code}): "
                    f"{(body or {}).get('detail')}")


def run_demo(opts: DemoOptions, say: Callable[[str], None],
             progress: Progress | None = None) -> DemoResult:
    """Everything `wodsync demo` does; `progress` shows the daemon's steps while it converges
    the host (its progress log lines, followed)."""
    from wodsync.demo.repo import CONTROLLER_STATE, git

    opts.folder.mkdir(parents=True, exist_ok=True)
    opts.folder.chmod(0o755)  # students' homes live below it
    catalog, _ = validated(opts.root)
    location = choose_location(opts, catalog)
    repo = write_repo(opts, catalog, location)
    mail.write_settings(repo, opts.mail_port, opts.api_port)
    commit(repo)
    demo_catalog, _ = validated(repo)
    secrets_file = write_secrets(opts.folder, demo_catalog)
    ensure_npm(say)
    api = _api(opts, secrets_file)
    mailbox = mail.start_sink(opts.folder, opts.mail_port)
    daemon.start(opts.folder, repo, secrets_file, api, f"127.0.0.1:{opts.api_port}",
                 opts.force_manager)
    head = git(repo, "rev-parse", "HEAD")
    api.call("POST", "/api/v1/reconcile")  # a rerun: converge again now, not at the resync
    say(f"the daemon deploys {head[:12]} to this machine (location {location}); the first "
        "run installs JupyterHub and the proxy")
    daemon.wait_converged(api, HOST, head, say, opts.folder / daemon.LOG_FILE, progress)
    session = _session(api, demo_workshop(demo_catalog, location))
    creds = session.get("credentials") or {}
    return DemoResult(f"http://127.0.0.1:{opts.port}/", creds.get("username", ""),
                      creds.get("password", ""), session["workshop"],
                      opts.folder / CONTROLLER_STATE, repo, session["id"], api.base, api.token,
                      mail.register_url(opts.api_port), mailbox)


def stop_demo(opts: DemoOptions) -> dict[str, Any]:
    """Stop the daemon and the mail sink, then the students' servers, the hub and its proxy
    (accounts, files, the mails and the session stay)."""
    from wodsync.engine import remote
    from wodsync.engine.desired import desired_state
    from wodsync.engine.kinds.service import stop_hub_request
    from wodsync.engine.transport import LocalTransport
    from wodsync.secrets import Secrets

    repo = opts.folder / "repo"
    if not (repo / "hosts" / f"{HOST}.yaml").exists():
        raise DemoError(f"no demo in {opts.folder}")
    daemon_was_running = daemon.stop(opts.folder)
    sink_was_running = mail.stop_sink(opts.folder)
    catalog, _ = validated(repo)
    desired = desired_state(catalog, HOST, Secrets.load(opts.folder / "secrets.yaml"))
    if "service" not in desired.want:
        raise DemoError("the demo host has no managed hub")
    stopped = remote.call(LocalTransport(), "stop_hub", stop_hub_request(desired))
    return {**stopped, "daemon_was_running": daemon_was_running,
            "sink_was_running": sink_was_running}


def lines(result: DemoResult) -> Iterator[str]:
    yield f"JupyterHub: {result.url}  (from elsewhere: http://{socket.gethostname()}:" \
          f"{result.url.rsplit(':', 1)[1]})"
    yield f"username:   {result.username}"
    yield f"password:   {result.password}"
    yield f"workshop:   {result.workshop} (in the seat's home)"
    yield f"register:   {result.register}  (a participant's way in: register, confirm, log in)"
    yield f"mailbox:    {result.mailbox}  (a Maildir: every mail the demo sends lands here)"
    yield f"API:        {result.api}/docs  (token: {result.api_token})"
    yield f"repository: {result.root}"
    yield f"            commit there and watch it deploy: cd {result.root} && $EDITOR " \
          "catalog/workshops/*/workshop.yaml && git commit -am 'my change'"
