"""The systemd unit of `wodsync daemon`, with every hardening choice explained in the unit.

An operator runs the daemon as root: it creates and removes accounts, writes `/etc`, homes and
sysctl values, installs packages and hooks — on remote hosts over SSH, and on this machine for a
`local` host, where its children inherit the unit's sandbox. So the usual hardening recipe
(`ProtectSystem=strict`, `ProtectHome=yes`, `ProtectKernelTunables=yes`, `UMask=0077`) would
break exactly what it is for; the unit takes the options that cost wodsync nothing and says, in
a comment above each line, why it is there or why its stricter value is not. The text is
generated (`wodsync daemon --print-unit` calls `render_unit`) so the command line, quoted the
way systemd parses it, always matches the installed wodsync.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

ENV_FILE = "/etc/wodsync/env"
STOP_TIMEOUT_S = 300
RESTART_S = 5
SAFE_ARG = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
STATE_ROOT = PurePosixPath("/var/lib")


def quote_arg(arg: str) -> str:
    """One argument as systemd's command-line parser reads it back unchanged (`%` and `$`
    doubled so no specifier or variable is expanded)."""
    if not arg or any(ord(c) < 32 or ord(c) == 127 for c in arg):
        raise ValueError(f"command-line argument {arg!r} is empty or holds a control character")
    if SAFE_ARG.fullmatch(arg):
        return arg
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("%", "%%").replace("$", "$$") + '"'


def exec_line(argv: list[str]) -> str:
    if not argv or not argv[0].startswith("/"):
        raise ValueError("ExecStart needs an absolute program path, e.g. /opt/wodsync/bin/wodsync")
    return " ".join(quote_arg(a) for a in argv)


def _state_lines(state_dir: str) -> list[str]:
    path = PurePosixPath(state_dir)
    if not path.is_absolute() or ".." in path.parts:
        raise ValueError(f"state folder {state_dir!r} must be an absolute path without '..'")
    if path.is_relative_to(STATE_ROOT) and path != STATE_ROOT:
        return ["# The state (mirror, revisions, SQLite store, its key, lock) in "
                f"{path}: created by systemd, root only.",
                f"StateDirectory={path.relative_to(STATE_ROOT)}",
                "StateDirectoryMode=0700"]
    return [f"# The state in {path} is outside /var/lib: the daemon creates it itself."]


def render_unit(exec_start: list[str], state_dir: str, user: str = "root", *,
                stop_timeout: int = STOP_TIMEOUT_S, description: str = "") -> str:
    """The unit file text for the daemon started by `exec_start` (absolute program first)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_-]*\$?", user):
        raise ValueError(f"user {user!r} is not a valid account name")
    lines = [
        "# wodsync daemon: follows the catalog repository and keeps the hosts converged.",
        "# Install as /etc/systemd/system/wodsync.service, then:",
        "#   systemctl daemon-reload && systemctl enable --now wodsync",
        "[Unit]",
        f"Description={description or 'wodsync GitOps daemon (Workshops-on-Demand hosts)'}",
        "# It fetches the repository and reaches hosts over SSH: start once the network is up.",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        "# Root: it manages accounts, /etc, homes, sysctl values and packages.",
        f"User={user}",
        f"WorkingDirectory={state_dir}",
        "# Secrets (WODSYNC_WEBHOOK_SECRET, WODSYNC_API_TOKEN, the database URL as",
        "# WODSYNC_DB, and WODSYNC_STORE_KEY when controllers share a PostgreSQL: else the key",
        "# that seals the sessions' passwords is the state's store.key) stay out of the unit",
        "# and of `systemctl show`, in a root-only file. Required: without it the daemon",
        "# would start with no API token, its session API refusing every call.",
        f"EnvironmentFile={ENV_FILE}",
        f"ExecStart={exec_line(exec_start)}",
        "# `systemctl reload wodsync`: SIGHUP re-reads the --secrets file and the API tokens",
        "# (a rotated hub token or SMTP password, a token made or revoked) without a restart.",
        "# The EnvironmentFile is read only at a start: a variable changed there needs one.",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "# A crash or a lost store restarts it; a clean stop (SIGTERM, exit 0) does not.",
        "Restart=on-failure",
        f"RestartSec={RESTART_S}s",
        "# SIGTERM goes to the daemon alone (mixed): it starts no new host and lets the agents and",
        "# SSH sessions of the batch in flight finish, then exits; what is left is killed after",
        "# TimeoutStopSec.",
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={stop_timeout}",
        *_state_lines(state_dir),
        "",
        "# Hardening that fits a root process managing accounts:",
        "# root needs no setuid program to gain rights, so none may be used to gain more (its",
        "# children too: chpasswd, usermod, hooks run as root already).",
        "NoNewPrivileges=yes",
        "# No setuid/setgid file is ever created by wodsync (homes and files drop those bits).",
        "# A `local` host installing an apt package that ships one must run its own agent.",
        "RestrictSUIDSGID=yes",
        "# Its temporary files are its own; a `local` host's hub must be a systemd service",
        "# (hub.service: systemd), not a child of this unit.",
        "PrivateTmp=yes",
        "# Not ProtectControlGroups: a `local` host's seats get their cgroups (the workshops'",
        "# limits) from the agent it runs, which writes below /sys/fs/cgroup.",
        "ProtectControlGroups=no",
        "LockPersonality=yes",
        "RestrictRealtime=yes",
        "# Not stricter, on purpose: it writes /etc (passwd, sysctl.d, units) and installs",
        "# packages (ProtectSystem=no, hence no ReadWritePaths= is needed), manages homes",
        "# (ProtectHome=no) and sets sysctl values (ProtectKernelTunables=no). UMask stays 0022:",
        "# what it installs into a hub environment must be readable by students.",
        "ProtectSystem=no",
        "ProtectHome=no",
        "ProtectKernelTunables=no",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"
