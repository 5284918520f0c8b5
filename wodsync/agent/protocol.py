"""The wire between the controller and the agent, typed once for both ends (standard library
only: shipped with the agent).

A request is an envelope `{protocol, op, payload}`; every payload starts with the host part
(`HostPayload`: the state folder and whose inventory it holds), and each operation of the
agent's table (`agent.main.OPERATIONS`) has its request and its answer here. The kinds' own
parts — their probes, facts and batch parts — are declared beside their host halves
(`agent.kinds.<kind>`); the seat operations' keys are `Seat`, which the controller writes
(`sessions.seat`) and the agent reads (`agent.seats`). JSON crosses the wire, so these are
`TypedDict`s: they cost nothing at run time and any python3 the host has can import them.
"""

from __future__ import annotations

from typing import Any, TypedDict

from wodsync.agent import records
from wodsync.agent.limits.backends import SeatLimits
from wodsync.agent.manager import Caller, ManagerRecord


class HostPayload(TypedDict):
    """What every request's payload carries: the host's state folder and its owner (`host
    <name>`, the catalog's host whose inventory the folder holds)."""

    state_dir: str
    owner: str


class _Request(TypedDict):
    protocol: int
    op: str
    payload: HostPayload


class Request(_Request, total=False):
    """The envelope: the agent refuses another `protocol` or an `op` not in its table.
    `progress`: report the call's steps while it runs — the persistent agent as
    `{"id", "progress"}` lines before its answer, a one-shot call as `PROGRESS_MARK` lines on
    its stderr."""

    progress: bool


class Answer(TypedDict, total=False):
    """`ok` with the operation's `result`, or not with the agent's `error` message."""

    ok: bool
    result: Any
    error: str


# ---- observe and apply (over the kinds) ----------------------------------------------------

class ObserveRequest(HostPayload):
    """Each kind's probe, by kind name (`agent.kinds.<kind>.Probe`)."""

    probes: dict[str, Any]


class _ObserveAnswer(TypedDict):
    facts: dict[str, Any]
    digests: dict[str, str]


class ObserveAnswer(_ObserveAnswer, total=False):
    """Each kind's facts (`agent.kinds.<kind>.Facts`) and their digests; who manages the
    host (`agent.manager`: None when no daemon does); the seconds each kind's observation
    took on the host (`timings`: where a no-op reconcile spends its time)."""

    manager: ManagerRecord | None
    timings: dict[str, float]


class _ApplyRequest(HostPayload):
    batch: dict[str, Any]           # kind → its part (`agent.kinds.<kind>.Part`)
    expect: dict[str, str]          # kind → the digest its facts had when planned
    probes: dict[str, Any]          # kind → its probe, to observe `expect`'s kinds again


class ApplyRequest(_ApplyRequest, total=False):
    lock_timeout: float             # seconds to wait for the host's lock (30 s)
    manager: Caller                 # who applies (`agent.manager`); absent: no store


class _ManageRequest(HostPayload):
    manager: Caller                 # a daemon, recording itself as the host's manager


class ManageRequest(_ManageRequest, total=False):
    """`manage` (`agent.manager.claim`): answered with the host's record (`ManagerRecord`)."""

    lock_timeout: float


PROGRESS_MARK = "\x1ewodsync-progress "
"""Starts each progress line the agent writes to stderr (JSON after it): `{"phase", "step",
"steps", "detail"}`. Anything else on stderr is the agent's own failure output."""


class Failure(TypedDict):
    phase: str
    error: str


class ApplyAnswer(TypedDict):
    """`stale`: the kinds whose facts moved since the plan (nothing was applied); else what
    was done, what failed, each phase's seconds and the phases a stop request skipped."""

    stale: list[str]
    log: list[str]
    failures: list[Failure]
    timings: dict[str, float]
    skipped: list[str]


class VersionAnswer(TypedDict):
    protocol: int
    python: str


# ---- the seat operations -----------------------------------------------------------------------

class Hub(TypedDict, total=False):
    """The host's hub API, wodsync's token there, the pool's hub group and the workshop's."""

    api: str
    token: str
    pool_group: str | None
    group: str


class Hook(TypedDict, total=False):
    """A hook as the repository holds it (`path`, base64 `data`), or why it could not be sent
    (`error`: the host reports it failed and releases the seat all the same)."""

    path: str
    data: str
    error: str


class SeatFile(TypedDict):
    path: str                       # relative to the workshop's folder in the home
    data: str                       # base64
    mode: int


class Egress(TypedDict):
    """A seat's egress allow-list (canonical entries, `agent.firewall.entries`) and the hub's
    entries, which the seat may reach besides its host's resolvers."""

    allow: list[str]
    hub: list[str]


class SeatKey(TypedDict):
    """The seat's own SSH key pair for its appliance (OpenSSH texts) and the appliance's
    pinned host key line, written into the seat's `~/.ssh` (`id_ed25519`, `.pub`,
    `known_hosts`). A secret: only ever on stdin."""

    private: str
    public: str
    known_hosts: str


class CheckScript(TypedDict):
    """A check (or solve) script as data: its step's name and points, and its bytes (base64),
    exactly as the repository holds them (never rendered)."""

    name: str
    points: int
    data: str


class CheckResult(TypedDict):
    """One step's outcome: passed (exit 0 in time), the student's message (the first `FAIL:`
    line, or why it did not pass) and the seconds it ran."""

    name: str
    points: int
    passed: bool
    message: str
    seconds: float


class _Seat(HostPayload):
    user: str
    uid: int
    session: str                    # "" for an operator's release
    workshop: str                   # "" for an operator's release
    hub: Hub | None
    hooks: dict[str, Hook]
    env: dict[str, str]


class Seat(_Seat, total=False):
    """One seat of a seat operation: who, where, the hub to talk to, and what the operation
    needs — the workshop's files and password for a CREATE, the notebooks to count at the end
    (None: unknown), `hold` to keep the seat for RESET, `force` to release whatever session
    the host records."""

    record: records.Record
    hook_timeout: float
    hook_variables: dict[str, Any]
    password: str
    files: list[SeatFile]
    compile: list[str]
    hold: bool
    notebooks: list[str] | None
    force: bool
    lock_timeout: float
    egress: Egress | None           # a CREATE's: None (or absent) leaves the seat open
    limits: SeatLimits | None       # the workshop's limits (None: none), at a CREATE
    cgroup_root: str                # where the cgroup trees are (default /sys/fs/cgroup)
    ssh_key: SeatKey | None         # a CREATE's, for a workshop with an appliance
    stage: str                      # a CREATE's: all (default), hook (up to the create hook,
                                    # answering its values), rest (after it: files and on)
    produces: list[str]             # names the create hook writes to $WOD_VALUES
    checks: list[CheckScript] | None  # a CLEANUP's: the workshop's checks, scored first
    check_timeout: float            # seconds one check script may run
    revision: str                   # the revision `files` come from (CREATE, seat_update)
    end: str                        # a `seat_end`'s: cleanup, reset or purge
    hot: bool                       # a CREATE's: a hot seat (password locked, no group,
                                    # recorded `hot` until `seat_take` gives it out)
    # Never on the wire: set on the host by a CREATE's waited stop, for the hub identity's
    # rotation that follows (`hubseat.SEEN`): when, and the hub user's model as then read.
    _hub_seen: tuple[float, dict[str, Any] | None]


class SeatCreateRequest(HostPayload):
    """`seat_create`: one seat, or the CREATEs of a burst brought together."""

    seats: list[Seat]


class HookOutput(TypedDict):
    """A hook's exit status (None: it did not finish) and the end of its output."""

    hook: str
    status: int | None
    output: str


class SeatAnswer(TypedDict, total=False):
    """One seat's outcome: `ok`, each step's seconds, the hooks' outputs and notes; on failure
    the `error`, the session holding the seat (`occupied`) and what the release left."""

    ok: bool
    timings: dict[str, float]
    outputs: list[HookOutput]
    notes: list[str]
    error: str | None
    server: str | None
    occupied: records.Record | None
    release_errors: list[str]
    completion: dict[str, Any] | None
    values: dict[str, str]          # what the create hook wrote (stage `hook`): secrets too
    checks: list[CheckResult] | None  # a CLEANUP's checks (None: none, or they could not run)


class SeatCheckRequest(Seat):
    """`seat_check`: the scripts of `checks` run in order on the seat of a session, each as the
    seat's user, each within `check_timeout` seconds."""


class SeatCheckAnswer(TypedDict):
    """`seat_check`: each step's outcome, in the request's order."""

    steps: list[CheckResult]


class SeatCreateAnswer(TypedDict):
    seats: list[SeatAnswer]


class _SeatUpdateRequest(HostPayload):
    seats: list[Seat]               # each with the new revision's `files` and `revision`


class SeatUpdateRequest(_SeatUpdateRequest, total=False):
    """`seat_update` (`agent.liveupdate`): live sessions' seats of one host brought to a new
    revision of their workshop's files, each against what it was given."""
    lock_timeout: float


class FileReport(TypedDict, total=False):
    """What a live update did to one file: `action` is added, updated, restored, merged, kept
    or beside (then `beside` is where the upstream file landed); `note` says why."""
    path: str
    action: str
    beside: str
    note: str


class SeatUpdated(TypedDict, total=False):
    """One seat's live update: `ok` with each file's report, or the `error` (a seat that is
    not an active session of the workshop on the host is not touched)."""
    user: str
    session: str
    ok: bool
    error: str | None
    revision: str
    files: list[FileReport]
    seconds: float


class SeatUpdateAnswer(TypedDict):
    seats: list[SeatUpdated]


class SeatEndRequest(HostPayload):
    """`seat_end`: the ends (CLEANUP, RESET, PURGE: each seat's `end`) of a burst brought
    together, or of one seat."""

    seats: list[Seat]


class SeatEndAnswer(TypedDict):
    seats: list[SeatAnswer]


class SeatRecordsAnswer(TypedDict):
    records: dict[str, records.Record]


class ServerSeat(TypedDict):
    user: str
    session: str


class SeatServersRequest(HostPayload):
    """`seat_servers`: the seats whose server start the hub deferred."""

    hub: Hub
    seats: list[ServerSeat]


class SeatServersAnswer(TypedDict):
    started: list[str]
    deferred: list[str]
    gone: list[str]
    errors: dict[str, str]


# ---- a seat's account on an appliance host (`agent.appliance`) ----------------------------------

class _ApplianceSeat(HostPayload):
    user: str
    uid: int


class ApplianceSeat(_ApplianceSeat, total=False):
    """`appliance_seat_create` (with the seat's `password` and `public_key`) and
    `appliance_seat_release` (neither)."""

    password: str
    public_key: str


class ApplianceAnswer(TypedDict):
    """`ok`, each step's seconds, and what did not work (`errors`: none of them a secret)."""

    ok: bool
    timings: dict[str, float]
    errors: list[str]


# ---- the seat guard (`guard_round`) --------------------------------------------------------------

class GuardRule(TypedDict, total=False):
    """A rule of `catalog/guard.yaml` as the host applies it (`catalog.guard`'s models)."""

    name: str
    type: str                       # banned, cpu, kernel_age, free_seat, egress
    action: str                     # report, kill, stop_server, purge, quarantine
    patterns: list[str]             # banned
    percent: float                  # cpu: of one core, the seat's processes together
    minutes: float                  # cpu: in a row
    allow: list[str]                # cpu: command lines not counted
    hours: float                    # kernel_age


class GuardPool(TypedDict):
    """The seats of the host's pool: user `<prefix><n>` has uid `uid_base + n`."""

    prefix: str
    uid_base: int
    first: int
    last: int


class GuardIdle(TypedDict):
    """Idle servers: stopped after `timeout` seconds without hub activity, busy kernel or CPU
    above `cpu_percent`; `proxy` is where the hub's proxy answers on the host."""

    timeout: float
    cpu_percent: float
    proxy: str


class GuardRoundRequest(HostPayload, total=False):
    pool: GuardPool
    rules: list[GuardRule]
    dry_run: bool                   # every action is `report` this round
    hub: Hub | None
    idle: GuardIdle | None


class GuardFinding(TypedDict, total=False):
    """What a rule found, with its evidence, and what the host did (`done`: killed, stopped,
    gone, reported; "" when the action is the controller's: purge, quarantine)."""

    rule: str
    type: str
    action: str
    user: str
    uid: int
    session: str                    # the session the seat's record names ("" for none)
    pid: int
    cmdline: str
    cpu: float                      # percent of one core since the last round
    over: float                     # cpu: seconds the seat has been over the rule's percent
    age: float                      # seconds since the process started (idle: since the
                                    # hub last saw activity)
    rejected: int                   # egress: packets refused since the last round
    done: str
    error: str


class GuardRoundAnswer(TypedDict):
    findings: list[GuardFinding]
    processes: int                  # processes of the pool's seats seen this round
    seats_busy: int                 # seats with at least one process
    seconds: float                  # the round on the host
    errors: list[str]
