"""service, controller half: the managed JupyterHub process, under systemd or started by
wodsync itself; the host half (observe, start, `stop_hub`) is `agent.kinds.service`.

The hub is restarted only when the fingerprint of what it runs (its configuration, its unit,
the JupyterHub and proxy versions) differs from the one it was started with, which wodsync keeps
beside the hub's data (neither systemd nor the hub knows it). The configuration turns
`cleanup_servers` and `cleanup_proxy` off, and systemd's unit uses `KillMode=process`, so a
restart ends the hub process only: students' servers keep running and the new hub adopts them.
The proxy keeps routing while the hub is down; the new hub then replaces it (JupyterHub 6 stops
the proxy of its pid file and starts another). A hub that is not running is started (self-heal).

Students share the host with the hub's ports, and whoever listens on one while its owner is
down gets that owner's traffic: the hub's port (the proxy sends it `/`, the login forms with
Linux passwords), the proxy's API port (the hub sends it the proxy's token) and the public port
(browsers). All three are below 1024 by default, where only root may listen, even while the hub
or the proxy is down — simpler and sturdier than the alternatives for JupyterHub 6.1 with
configurable-http-proxy 4.6: a Unix socket for the hub needs a proxy that routes to sockets
(4.6 cannot), and an `iptables` owner rule needs a firewall wodsync would share with the host's
own, and closes the API port only (a rule cannot stop anyone from listening).
The proxy's token is new at every proxy start and never stored (the hub's configuration makes
it), so a token seen once is worthless after the next restart. The kernel decides what
"privileged" means (`net.ipv4.ip_unprivileged_port_start`, 0 in some containers): it is
observed, and a hub port a student could take is a plan note.

With `hub.tls` the proxy serves https. configurable-http-proxy reads its certificate once, when
it starts, so the host half reports a digest of the certificate and key on disk and the one the
running hub's proxy started with: when they differ (a certificate renewed in place), the hub is
restarted, and with it comes a new proxy that serves the new certificate. Students' servers
keep running; what they see is the proxy's replacement — the hub's pages answer 503 for the few
seconds the hub takes to start, and an open JupyterLab loses its connection for a moment and
reconnects by itself (kernels keep their state). Files that are missing, not root's or a key
others may read are errors located at the host file's `hub.tls`, and the hub is then left as it
is: a proxy started with them would not come up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from wodsync.agent.hubtls import TlsProbe
from wodsync.agent.kinds.service import KIND, PORT_SYSCTL, Facts, Part, Probe, StopHubRequest
from wodsync.agent.protocol import HostPayload
from wodsync.engine import hubwant
from wodsync.engine.change import Action, Change

if TYPE_CHECKING:
    from wodsync.engine.context import DesiredContext
    from wodsync.engine.kinds.base import PlanContext

NAME = "jupyterhub"


class Wish(Protocol):
    """What `stop_hub_request` reads of a host's desired state (an `engine.desired.DesiredHost`,
    named by its shape so this kind does not import the module that runs the kinds)."""

    @property
    def want(self) -> dict[str, Any]: ...

    def payload(self) -> HostPayload: ...


@dataclass(frozen=True)
class HubService:
    supervisor: str              # systemd | process
    api: str
    prefix: str
    data_dir: str
    config_path: str
    fingerprint: str
    ports: tuple[tuple[str, int], ...] = ()    # (field, port) of the hub's three ports
    tls: tuple[str, str] | None = None         # (cert, key) paths on the host
    tls_at: str = ""                           # where hub.tls is in the host file


@dataclass(frozen=True)
class ServiceChange:
    start: str                   # start | restart


DATA = ServiceChange


def desired(ctx: DesiredContext) -> HubService | None:
    hub = ctx.host.hub
    if hub is None or not hub.manage:
        return None
    pip, _ = hubwant.requirements(ctx.catalog, ctx.host)
    files = [f.data for f in ctx.hub_files.values()]
    return HubService(hub.service, hub.api, hub.prefix, hub.data_dir,
                      f"{hub.config_dir}/jupyterhub_config.py",
                      hubwant.fingerprint(files, pip.get("jupyterhub", ""), hubwant.npm(hub)),
                      tuple(hub.ports()), (hub.tls.cert, hub.tls.key) if hub.tls else None,
                      _tls_at(ctx) if hub.tls else "")


def _tls_at(ctx: DesiredContext) -> str:
    """`hosts/<name>.yaml:LINE:COL` of the host's `hub.tls`, where its errors point."""
    try:
        doc = ctx.catalog.host_doc(ctx.name)
    except KeyError:
        return f"hosts/{ctx.name}.yaml"
    line, col = doc.at("hub", "tls")
    return f"{doc.rel}:{line}:{col}"


def _tls_probe(want: HubService) -> TlsProbe | None:
    return {"cert": want.tls[0], "key": want.tls[1]} if want.tls else None


def probe(want: HubService) -> Probe:
    return {"supervisor": want.supervisor, "data_dir": want.data_dir, "tls": _tls_probe(want)}


def _facts(plan: PlanContext) -> Facts:
    facts: Facts = plan.facts[KIND]
    return facts


def _port_start(plan: PlanContext) -> int | None:
    """The kernel's limit as it will be once this plan's sysctl values are written, else as
    observed; None when unknown (an older agent, or no such sysctl)."""
    values: tuple[Any, ...] = ((plan.want.get("sysctl") or {}).get(PORT_SYSCTL),
                               _facts(plan).get("unprivileged_port_start"))
    for value in values:
        try:
            return int(value)
        except (TypeError, ValueError):
            continue
    return None


def _check_ports(plan: PlanContext, want: HubService) -> None:
    """A note per hub port a student could listen on while the hub or its proxy is down."""
    start = _port_start(plan)
    if start is None:
        return
    for name, port in want.ports:
        if port < start:
            continue
        fixes = ["use a port below 1024"] if port >= 1024 else []
        if start < 1024:
            fixes.append(f"set `{PORT_SYSCTL}: 1024` in the host's `sysctl`")
        plan.notes.append(
            f"hub.{name} {port} is open to students ({PORT_SYSCTL} is {start}): one listening "
            "there while the hub or its proxy restarts receives their traffic (login forms, "
            f"the proxy's token); {' and '.join(fixes)}")


def _tls_unfit(plan: PlanContext, want: HubService) -> bool:
    """The certificate or key cannot be served: an error each, located at `hub.tls`."""
    tls: dict[str, Any] = dict(_facts(plan).get("tls") or {})
    for problem in tls.get("problems", []) if want.tls else []:
        plan.errors.append(f"{want.tls_at}: hub.tls: {problem}; the hub is left as it is")
    return bool(want.tls and (tls.get("problems") or not tls.get("digest")))


def _renewed(state: Facts, want: HubService) -> bool:
    """The certificate or key on disk is not what the running proxy started with."""
    tls: dict[str, Any] = dict(state.get("tls") or {})
    return bool(want.tls) and tls.get("digest") != state.get("tls_started")


def diff(plan: PlanContext) -> None:
    want: HubService = plan.want[KIND]
    state = _facts(plan)
    _check_ports(plan, want)
    if _tls_unfit(plan, want):
        return
    if not state.get("running"):
        plan.add(Action.CREATE, KIND, NAME, "not running", ServiceChange("start"))
    elif state.get("fingerprint") != want.fingerprint:
        plan.add(Action.UPDATE, KIND, NAME, "configuration or version changed: restart "
                 "(student servers keep running)", ServiceChange("restart"))
    elif _renewed(state, want):
        plan.add(Action.UPDATE, KIND, NAME, "TLS certificate or key changed on disk: restart, "
                 "its new proxy serves it (student servers keep running)",
                 ServiceChange("restart"))
    else:
        plan.noop(KIND, NAME, f"is running (pid {state.get('pid')}) with this configuration")


def batch(want: HubService, changes: list[Change]) -> Part:
    return {"supervisor": want.supervisor, "api": want.api, "prefix": want.prefix,
            "data_dir": want.data_dir, "config_path": want.config_path,
            "fingerprint": want.fingerprint, "tls": _tls_probe(want)}


def stop_hub_request(desired: Wish) -> StopHubRequest:
    """The payload of `stop_hub` for a host whose hub wodsync manages (`demo stop`, benches):
    its servers are stopped too when wodsync has the hub's token."""
    service: HubService = desired.want[KIND]
    users = desired.want.get("hub_user")
    return {**desired.payload(), "supervisor": service.supervisor,
            "data_dir": service.data_dir, "api": service.api,
            "token": users.token if users else None}
