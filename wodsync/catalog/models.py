"""The catalog's vocabulary as Pydantic models: one model per file type.

These models are the single definition of the catalog format: `validate` checks files against
them, `schema` turns them into the JSON Schemas editors use, and the rest of wodsync reads the
validated objects. Models are strict (no silent `"20"` → 20) and forbid unknown keys, so a typo
such as `capcity` is an error, not a silently ignored field.

Names that end up in commands on a host (workshop keys, user-name prefixes, host and location
names, script paths) are restricted to patterns without shell metacharacters; what root runs on a
host because of the catalog (kernel installers, pip requirements) is narrowed further in
`installers`. A check about one field raised from a model-level validator names that field in its
context (`at`), so the loader points the error at the field rather than at the model.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, NamedTuple, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    StringConstraints,
    Tag,
    model_validator,
)
from pydantic import Strict as PydanticStrict
from pydantic_core import PydanticCustomError

from wodsync.agent.firewall.entries import canonical as egress_canonical
from wodsync.catalog.hostkey import InvalidHostKey, check_host_key
from wodsync.catalog.installers import install_problem, requirement_problem
from wodsync.catalog.placeholders import ADDRESS as PLACEHOLDER_ADDRESS
from wodsync.catalog.recipes import RECIPES, RecipeUse, use, version_problem

WORKSHOP_KEY_RE = r"^WKSHP-[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
LINUX_NAME_RE = r"^[a-z_][a-z0-9_-]{0,23}$"
VAR_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_-]{0,127}$"
SECRET_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
ABS_PATH_RE = r"^/([A-Za-z0-9._+-]+/?)*$"
REL_PATH_RE = r"^[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*$"
URL_RE = r"^https?://[^\s\"'<>`]+$"
HOST_ADDRESS_RE = r"^[A-Za-z0-9]([A-Za-z0-9.:-]*[A-Za-z0-9])?$"
HOST_KEY_RE = (r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|"
               r"ecdsa-sha2-nistp521) [A-Za-z0-9+/]+={0,3}$")
APT_NAME_RE = r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$"

MIN_ID = 1000
MAX_ID = 59999


def located(code: str, message: str, at: str | int | None = None) -> PydanticCustomError:
    """A validation error with its own code; `at` names the field or item it is about."""
    ctx: dict[str, Any] = {"message": message}
    if at is not None:
        ctx["at"] = at
    return PydanticCustomError(code, "{message}", ctx)


WorkshopKey = Annotated[str, StringConstraints(pattern=WORKSHOP_KEY_RE)]
Name = Annotated[str, StringConstraints(pattern=NAME_RE)]
LinuxName = Annotated[str, StringConstraints(pattern=LINUX_NAME_RE)]
VarName = Annotated[str, StringConstraints(pattern=VAR_NAME_RE)]
AbsPath = Annotated[str, StringConstraints(pattern=ABS_PATH_RE, max_length=255)]


def _inside(value: str) -> str:
    """Relative paths stay inside their folder: no `.` or `..` segments."""
    if any(part in (".", "..") for part in value.split("/")):
        raise ValueError(f"path {value!r} must not contain '.' or '..' segments")
    return value


RelPath = Annotated[str, StringConstraints(pattern=REL_PATH_RE, max_length=255),
                    AfterValidator(_inside)]
Url = Annotated[str, StringConstraints(pattern=URL_RE, max_length=2048)]
Text = Annotated[str, StringConstraints(max_length=10_000)]
Title = Annotated[str, StringConstraints(min_length=1, max_length=300)]
ImageRef = Annotated[str, StringConstraints(pattern=f"({URL_RE})|({ABS_PATH_RE})|({REL_PATH_RE})",
                                            max_length=2048), AfterValidator(_inside)]


def _pip_requirement(value: str) -> str:
    problem = requirement_problem(value)
    if problem:
        raise located("pip-requirement", problem)
    return value


def _installer(argv: list[str]) -> list[str]:
    problem = install_problem(argv)
    if problem:
        raise located("kernel-install", problem[1], problem[0])
    return argv


def _host_key(value: str) -> str:
    try:
        check_host_key(value)
    except InvalidHostKey as exc:
        raise located("host-key", f"pinned host key: {exc}") from None
    return value


def _egress_entry(value: str) -> str:
    try:
        return egress_canonical(value)
    except ValueError as exc:
        raise located("egress-entry", str(exc)) from None


EgressEntry = Annotated[str, StringConstraints(min_length=1, max_length=120),
                        AfterValidator(_egress_entry)]
PipRequirement = Annotated[str, StringConstraints(max_length=200),
                           AfterValidator(_pip_requirement)]
AptPackage = Annotated[str, StringConstraints(pattern=APT_NAME_RE, max_length=200)]


class Strict(BaseModel):
    """Base of every catalog model: strict types, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SecretRef(Strict):
    """A value kept out of git: resolved at run time from the environment or a secrets file."""

    secret: Annotated[str, StringConstraints(pattern=SECRET_NAME_RE)] = Field(
        description="Name of the secret: an environment variable or a key of the secrets file.")


VarValue = str | int | float | bool | SecretRef
Variables = dict[VarName, VarValue]


class SeatRange(Strict):
    """Inclusive range of seat numbers (student accounts) of the host's pool."""

    first: Annotated[int, Field(ge=1, le=1_000_000)]
    last: Annotated[int, Field(ge=1, le=1_000_000)]

    @model_validator(mode="after")
    def _ordered(self) -> SeatRange:
        if self.last < self.first:
            raise ValueError(f"last ({self.last}) is before first ({self.first})")
        return self

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def overlaps(self, other: SeatRange) -> bool:
        return self.first <= other.last and other.first <= self.last

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


class Hooks(Strict):
    """Lifecycle scripts, paths inside the workshop folder, run on the host as root."""

    create: RelPath | None = None
    post_copy: RelPath | None = None
    cleanup: RelPath | None = None
    reset: RelPath | None = None


class Check(Strict):
    """A scored step of a workshop: a script run as the seat's own user (exit 0 = passed, its
    first `FAIL:` line is the message for the student), and optionally the script that makes
    it pass (`solve`, run by the content CI)."""

    name: Name = Field(description="The step's name, unique in the workshop.")
    script: RelPath = Field(description="The check script, inside the workshop folder.")
    points: Annotated[int, Field(ge=1, le=1000)] = Field(
        1, description="What passing the step is worth in the score.")
    solve: RelPath | None = Field(None, description="A script that makes the step pass, inside "
                                                    "the workshop folder (content CI).")


def _unique_checks(checks: list[Check]) -> list[Check]:
    """Each step is named once: the score lists steps by name."""
    seen: set[str] = set()
    for n, check in enumerate(checks):
        if check.name in seen:
            raise located("duplicate-check", f"check '{check.name}' is named twice", n)
        seen.add(check.name)
    return checks


Checks = Annotated[list[Check], AfterValidator(_unique_checks)]


class Packages(Strict):
    """What a workshop or a host environment needs installed.

    pip packages go into the host's hub environment (the venv students' servers run from);
    apt packages into the system.
    """

    pip: list[PipRequirement] = []
    apt: list[AptPackage] = []


class Kernel(Strict):
    """A Jupyter kernel a workshop needs, and how it gets onto the host.

    The kernel is present when `jupyter kernelspec list` of the hub environment names it.
    `pip` packages are installed first (a kernel package that ships its kernelspec needs
    nothing more); `install` is run after them for kernels that register themselves
    (e.g. `[python, -m, bash_kernel.install, --sys-prefix]`), `python`/`jupyter` meaning the
    hub environment's.
    """

    name: Name
    pip: list[PipRequirement] = []
    install: Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=256)]],
                       AfterValidator(_installer)] = Field(
        [], description="`[python, -m, <module>, ...]` or `[jupyter, kernelspec|labextension|"
                        "nbextension|serverextension, ...]` of the hub environment; arguments "
                        "without spaces, quotes or shell syntax.")


RecipeName = Literal["bash", "go", "python", "rust", "ssh"]
assert set(get_args(RecipeName)) == set(RECIPES), "RecipeName lists every recipe"


class KernelRecipe(Strict):
    """A kernel installed by one of wodsync's recipes (`wodsync.catalog.recipes`), pinned to
    `version` (default: the recipe's own pin). A bare recipe name in `kernels` is the same
    recipe at its default version."""

    recipe: RecipeName = Field(description="bash, ssh, go (gophernotes), rust (evcxr), "
                                           "python (ipykernel).")
    version: Annotated[str, StringConstraints(max_length=32)] | None = Field(
        None, description="MAJOR.MINOR.PATCH of the kernel package; default: the recipe's.")

    @model_validator(mode="after")
    def _version(self) -> KernelRecipe:
        problem = version_problem(self.recipe, self.version) if self.version else None
        if problem:
            raise located("kernel-version", problem, "version")
        return self

    def resolved(self) -> RecipeUse:
        return use(self.recipe, self.version)


def _kernel_form(value: Any) -> str:
    if isinstance(value, KernelRecipe) or (isinstance(value, dict) and "recipe" in value):
        return "KernelRecipe"
    return "Kernel" if isinstance(value, dict | Kernel) else "name"


# A kernel is a name or a mapping: the discriminator keeps an error in a mapping from also
# being reported as "not a string" at the same item.
KernelEntry = Annotated[Annotated[Name, Tag("name")] | Annotated[Kernel, Tag("Kernel")]
                        | Annotated[KernelRecipe, Tag("KernelRecipe")],
                        Discriminator(_kernel_form)]


def resolve_kernel(entry: str | Kernel | KernelRecipe) -> Kernel | RecipeUse:
    """What a `kernels` entry installs: a recipe (named alone, at its default version, or as
    `{recipe, version}`), a kernel of the catalog's own, or a name the host provides."""
    if isinstance(entry, KernelRecipe):
        return entry.resolved()
    if isinstance(entry, str):
        return use(entry) if entry in RECIPES else Kernel(name=entry)
    return entry


SIZE_RE = r"^[0-9]+(\.[0-9]+)?[KMGT]$"
SIZE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
MIN_SIZE = 1 << 20


def size_bytes(text: str) -> int:
    """`512M`, `1.5G`, … in bytes (binary units: what cgroups and quotas count in)."""
    return int(float(text[:-1]) * SIZE_UNITS[text[-1]])


def _size(text: str) -> str:
    if not re.match(SIZE_RE, text):
        raise located("size", f"{text!r} is not a size: a number and a unit K, M, G or T "
                              "(e.g. 512M, 1.5G)")
    if size_bytes(text) < MIN_SIZE:
        raise located("size", f"{text} is less than 1M")
    return text


Size = Annotated[str, StringConstraints(max_length=32), AfterValidator(_size)]
LIMIT_FIELDS = ("memory_high", "memory_max", "cpu", "tasks", "disk")


class Limits(Strict):
    """What the kernel grants each seat: memory (`memory_high`: reclaimed above it;
    `memory_max`: killed above it), `cpu` in cores, `tasks` (processes and threads), `disk` of
    the home's filesystem. On a workshop, with defaults on the host and the pool: the workshop's
    value wins, then the host's, then the pool's, field by field; an absent field is no limit."""

    memory_high: Size | None = Field(None, description="Memory above which the seat is "
                                                       "throttled and reclaimed, e.g. 1G.")
    memory_max: Size | None = Field(None, description="Memory the seat is never given more "
                                                      "of (its processes are OOM-killed).")
    cpu: Annotated[float, Field(gt=0, le=1024)] | None = Field(
        None, description="Cores the seat may use at most, e.g. 1.5.")
    tasks: Annotated[int, Field(ge=1, le=4_194_304)] | None = Field(
        None, description="Processes and threads the seat may have at once.")
    disk: Size | None = Field(None, description="Space of the home's filesystem (a user "
                                                "quota, where the filesystem has them).")

    @model_validator(mode="after")
    def _high_below_max(self) -> Limits:
        problem = self.memory_problem()
        if problem:
            raise located("limits-memory", problem, "memory_high")
        return self

    def memory_problem(self) -> str | None:
        """Why memory_high and memory_max do not fit together, or None."""
        if self.memory_high and self.memory_max \
                and size_bytes(self.memory_high) > size_bytes(self.memory_max):
            return (f"memory_high ({self.memory_high}) is above memory_max "
                    f"({self.memory_max})")
        return None

    def over(self, base: Limits | None) -> Limits:
        """These limits, with `base`'s values where these have none."""
        if base is None:
            return self
        return Limits.model_construct(**{name: getattr(self, name) if getattr(self, name)
                                         is not None else getattr(base, name)
                                         for name in LIMIT_FIELDS})

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in LIMIT_FIELDS)


def effective_limits(workshop: Limits | None, host: Limits | None,
                     pool: Limits | None) -> Limits:
    """A workshop's seats' limits on one host: workshop > host > pool, field by field."""
    merged = Limits()
    for layer in (pool, host, workshop):
        merged = layer.over(merged) if layer is not None else merged
    return merged


class Appliance(Strict):
    """Where a workshop's seats also live: hosts of role `appliance`, one for all seats
    (`shared`) or one per seat (`per_seat`: the seat's offset in the workshop's range picks
    its host, as WoD's `base + stdid - range[0]`)."""

    hosts: Annotated[list[Name], Field(min_length=1)] = Field(
        description="Appliance hosts (`hosts/<name>.yaml`, `role: appliance`).")
    mode: Literal["shared", "per_seat"] = Field(
        description="shared: the one host of `hosts` for every seat; per_seat: host number "
                    "SEAT_OFFSET of `hosts` (at least one per seat of the range).")

    @model_validator(mode="after")
    def _one_shared(self) -> Appliance:
        if self.mode == "shared" and len(self.hosts) != 1:
            raise located("appliance-hosts", f"a shared appliance is one host, not "
                          f"{len(self.hosts)}", "hosts")
        return self


class HookValue(Strict):
    """A per-seat value the workshop's `create` hook writes to `$WOD_VALUES` (NAME=value
    lines or one JSON object); `secret` keeps it like a password (names ending in TOK, TOKEN
    or PASSWORD are kept so anyway)."""

    hook: Literal["create"]
    secret: bool = False


def _mapping_or_text(value: Any) -> str:
    """Which form an entry takes, so that one mistake gives one error, not one per form."""
    return "mapping" if isinstance(value, dict) else "text"


ApplianceEntry = Annotated[
    Annotated[Literal["none", "mono", "multi"], Tag("text")] | Annotated[Appliance,
                                                                        Tag("mapping")],
    Discriminator(_mapping_or_text)]
SeatValueName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
SeatValue = Annotated[
    Annotated[Annotated[str, StringConstraints(min_length=1, max_length=1000)], Tag("text")]
    | Annotated[HookValue, Tag("mapping")], Discriminator(_mapping_or_text)]


class Workshop(Strict):
    """A workshop: `catalog/workshops/<KEY>/workshop.yaml`; the folder name is its key."""

    name: Title = Field(description="Title shown on the registration portal.")
    description: Text = ""
    active: bool = True
    capacity: Annotated[int, Field(ge=0)] = Field(
        description="Maximum concurrent students; at most the size of `seats`.")
    priority: int = Field(1, description="Sort order on the portal.")
    seats: SeatRange = Field(description="Seats of the pool this workshop owns.")
    reset: bool = Field(False, description="Has a reset script; a seat is held until reset.")
    ldap: bool = Field(False, description="Push the student password to LDAP.")
    varpass: bool = Field(False, description="Templates use the student password (PASSSTU).")
    compile: list[RelPath] = Field([], description="Scripts compiled with shc at CREATE.")
    session_type: Literal["Workshops-on-Demand", "Coding Challenge"] = "Workshops-on-Demand"
    location: Name
    alternate_locations: list[Name] = Field([], description="Failover locations, in order.")
    replay: Annotated[int, Field(ge=1)] | None = Field(None, description="Replay id.")
    workshop_image: ImageRef | None = None
    badge_image: ImageRef | None = None
    badge_threshold: Annotated[float, Field(ge=0, le=100)] = Field(
        0, description="Completion (%) a session needs at its CLEANUP to earn the workshop's "
                       "badge; 0 (WoD's behaviour): every session that ends by CLEANUP.")
    beta: bool = False
    category: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] = []
    duration: Annotated[float, Field(gt=0, le=720)] = Field(
        description="Hours a session lasts before it is cleaned up.")
    presenter: Annotated[str, StringConstraints(max_length=300)] | None = None
    role: Annotated[str, StringConstraints(max_length=300)] | None = None
    avatar: ImageRef | None = None
    appliance: ApplianceEntry = Field(
        "none", description="Remote appliance: `{hosts: [...], mode: shared|per_seat}` (hosts "
                            "of role `appliance` where each seat gets an account, a key and "
                            "its password), or WoD's label none, mono or multi (nothing is "
                            "done on an appliance for a label).")
    seat_values: dict[SeatValueName, SeatValue] = Field(
        {}, description="Values computed per seat (`HTTPPORT: \"{{ 8000 + SEAT_OFFSET }}\"`, "
                        "SEAT_OFFSET = seat - seats.first) or written by the `create` hook "
                        "(`SPARKTOK: {hook: create}`), rendered into that seat's files only.")
    variables: Variables = Field({}, description="Template variables of this workshop.")
    hooks: Hooks = Hooks()
    packages: Packages = Packages()
    kernels: list[KernelEntry] = Field(
        [], description="Jupyter kernels the notebooks need: a recipe (bash, ssh, go, rust, "
                        "python; `{recipe, version}` to pin another version), a name already "
                        "provided by the host, or how to install it.")
    egress: list[EgressEntry] | None = Field(
        None, description="What a seat may reach: `host:port`, `cidr`, `cidr:port`, "
                          "`[ipv6]:port`, a name (resolved on the host); besides loopback, the "
                          "hub and DNS, everything else is refused. Absent: no restriction.")
    limits: Limits | None = Field(None, description="What the kernel grants each seat of this "
                                                    "workshop (over the host's and the pool's).")
    checks: Checks = Field([], description="Scored steps: `{name, script, points, solve}`, each "
                                           "script run as the seat's user; the score is the "
                                           "passed points over all points (0-100).")
    check_timeout: Annotated[int, Field(ge=1, le=600)] = Field(
        30, description="Seconds one check (or solve) script may run before it is killed.")
    live_update: Literal["off", "merge"] = Field(
        "merge", description="What a deployed revision that changes this workshop's files does "
                             "to its running sessions: `merge` (default) updates each seat "
                             "with nbgitpuller's rules (a student's edits are kept), `off` "
                             "leaves them as they were given.")


class Replay(Strict):
    """A recorded session of a workshop, shown on the portal's learn-more page."""

    id: Annotated[int, Field(ge=1)]
    title: Title
    description: Text = ""
    presenter: Annotated[str, StringConstraints(max_length=300)] | None = None
    role: Annotated[str, StringConstraints(max_length=300)] | None = None
    avatar: ImageRef | None = None
    video: Url
    workshop: WorkshopKey
    active: bool = True


class ReplaysFile(Strict):
    """`catalog/replays.yaml`."""

    replays: list[Replay] = []


class Event(Strict):
    """A scheduled event of a workshop (`catalog/events.yaml`): from `lead` minutes before its
    start until its end, ceil(expected × warm) seats of the workshop are kept hot — set up,
    their server started, under a locked password — so the participants' CREATEs only hand
    them over (`wodsync.sessions.hotseats`)."""

    name: Name
    workshop: WorkshopKey
    start: Annotated[AwareDatetime, PydanticStrict(False)] = Field(
        description="ISO 8601 date and time with its zone, e.g. 2027-03-02T09:00:00+01:00.")
    end: Annotated[AwareDatetime, PydanticStrict(False)] | None = Field(
        None, description="When it ends (or give `hours`).")
    hours: Annotated[float, Field(gt=0, le=72)] | None = Field(
        None, description="How long it lasts (or give `end`).")
    expected: Annotated[int, Field(ge=1, le=100000)] = Field(
        description="Participants expected.")
    warm: Annotated[float, Field(ge=0, le=1)] = Field(
        0.65, description="Fraction of `expected` kept hot.")
    lead: Annotated[int, Field(ge=0, le=1440)] = Field(
        60, description="Minutes before `start` the hot seats are prepared.")

    @model_validator(mode="after")
    def _one_end(self) -> Event:
        if (self.end is None) == (self.hours is None):
            raise PydanticCustomError("event-end", "give exactly one of `end` and `hours`")
        if self.end is not None and self.end <= self.start:
            raise PydanticCustomError("event-end", "`end` must be after `start`")
        return self

    @property
    def ends(self) -> datetime:
        return self.end if self.end is not None else self.start + timedelta(hours=self.hours or 0)

    @property
    def warms_at(self) -> datetime:
        """When its hot seats are prepared: `lead` minutes before the start."""
        return self.start - timedelta(minutes=self.lead)

    @property
    def hot_target(self) -> int:
        """How many hot seats it keeps ready: ceil(expected × warm)."""
        return math.ceil(self.expected * self.warm - 1e-9)

    def warm_at(self, now: datetime) -> bool:
        """Whether its hot seats are kept at `now`: from `warms_at` until its end."""
        return self.warms_at <= now < self.ends


class EventsFile(Strict):
    """`catalog/events.yaml`."""

    events: list[Event] = []


class Pool(Strict):
    """A pool of student accounts: seat n is user `<prefix><n>` with uid `uid_base + n`.

    Seat n's private group has gid `gid_base + n`. The pool's shared `group` gets `group_gid`,
    by default `gid_base`, which no seat has since seats start at 1; it is checked to stay out
    of every seat's gid so a grown pool never gives a seat the shared group as primary group.
    """

    prefix: LinuxName
    first: Annotated[int, Field(ge=1)]
    last: Annotated[int, Field(ge=1, le=100_000)]
    uid_base: Annotated[int, Field(ge=0)]
    gid_base: Annotated[int, Field(ge=0)]
    home_root: AbsPath
    shell: AbsPath = "/bin/bash"
    group: LinuxName | None = Field(None, description="Extra group every seat belongs to.")
    group_gid: Annotated[int, Field(ge=0)] | None = Field(
        None, description="gid of the shared group; default gid_base, which is never a seat's "
                          "gid since seats start at 1.")
    limits: Limits | None = Field(None, description="Default limits of every seat of the pool.")

    @model_validator(mode="after")
    def _sane(self) -> Pool:
        if self.last < self.first:
            raise ValueError(f"last ({self.last}) is before first ({self.first})")
        if len(f"{self.prefix}{self.last}") > 32:
            raise ValueError("user names would be longer than 32 characters")
        for base in (self.uid_base, self.gid_base):
            if base + self.first < MIN_ID or base + self.last > MAX_ID:
                raise ValueError(f"ids must stay within {MIN_ID}..{MAX_ID} "
                                 "(never system accounts)")
        self._check_shared_gid()
        return self

    def _check_shared_gid(self) -> None:
        at = "group_gid" if self.group_gid is not None else "group"
        if self.group is None:
            if self.group_gid is not None:
                raise located("group-gid", "group_gid is set but the pool has no group", at)
            return
        gid = self.shared_gid
        if not MIN_ID <= gid <= MAX_ID:
            raise located("group-gid", f"the shared group '{self.group}' would get gid {gid}, "
                          f"outside {MIN_ID}..{MAX_ID}; set group_gid", at)
        if self.seat_gids[0] <= gid <= self.seat_gids[1]:
            raise located("group-gid", f"the shared group '{self.group}' would get gid {gid}, "
                          f"the gid of seat {gid - self.gid_base}; set group_gid outside "
                          f"{self.seat_gids[0]}..{self.seat_gids[1]}", at)

    @property
    def shared_gid(self) -> int:
        """The gid the shared group is created with (`group_gid`, else `gid_base`)."""
        return self.group_gid if self.group_gid is not None else self.gid_base

    @property
    def seat_gids(self) -> tuple[int, int]:
        """First and last gid of the seats' private groups."""
        return self.gid_base + self.first, self.gid_base + self.last

    @property
    def seats(self) -> SeatRange:
        return SeatRange(first=self.first, last=self.last)

    def user(self, seat: int) -> str:
        return f"{self.prefix}{seat}"

    def home(self, seat: int) -> str:
        """The seat's home, as its account is created: `<home_root>/<prefix><n>`."""
        return f"{self.home_root.rstrip('/')}/{self.user(seat)}"


class StudentsFile(Strict):
    """`catalog/students.yaml`."""

    pools: dict[Name, Pool]


class Location(Strict):
    """A site where workshops run; hosts belong to one location."""

    name: Name
    description: Text = ""


class LocationsFile(Strict):
    """`catalog/locations.yaml`."""

    locations: list[Location]


class VariablesFile(RootModel[Variables]):
    """`catalog/variables.yaml`: global template variables (branding, survey URLs, …)."""

    model_config = ConfigDict(strict=True, frozen=True)


HUB_UNIT = "jupyterhub.service"
# Where JupyterLab reads the settings defaults of every user of an environment.
LAB_OVERRIDES = "share/jupyter/lab/settings/overrides.json"
# Linux's default `net.ipv4.ip_unprivileged_port_start`: only root may listen below it.
PRIVILEGED_BELOW = 1024
HUB_PORTS = ("port", "hub_port", "proxy_api_port")
Port = Annotated[int, Field(ge=1, le=65535)]


class HubFile(NamedTuple):
    path: str
    template: str
    mode: int
    on_change: tuple[str, ...] = ()


PipVersion = Annotated[str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)*([a-z]+[0-9]+)?$")]
NpmVersion = Annotated[str, StringConstraints(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")]


PublicUrl = Annotated[str, StringConstraints(pattern=r"^https?://[A-Za-z0-9.:\[\]-]+(/[^\s\"'<>`?#]*)?$",
                                             max_length=2048)]


class HubTls(Strict):
    """The certificate the hub's proxy serves (https): files on the host, root's. The engine
    checks them at every plan (a missing file, a key others may read are errors) and restarts
    the hub when their content changed, so a certificate renewed in place is served."""

    cert: AbsPath = Field(description="PEM certificate (with its chain) on the host.")
    key: AbsPath = Field(description="PEM private key on the host: root's, mode 0600 or 0400.")


class Hub(Strict):
    """The host's JupyterHub: the environment, the service and how wodsync reaches its API.

    With `manage: true` wodsync installs the environment (a venv under `prefix`, readable by
    every student), renders the hub configuration from `templates/hub/`, keeps the hub running
    and restarts it only when its configuration changed. With `manage: false` an existing hub is
    only used for hub users and groups. Hub users and groups are managed when `token` is set.
    """

    manage: bool = True
    service: Literal["systemd", "process"] = Field(
        "systemd", description="systemd: a unit rendered from templates/hub/ (KillMode=process: "
                               "a restart keeps students' servers); process: wodsync starts the "
                               "hub itself (hosts without systemd, the demo).")
    unit_dir: AbsPath = Field("/etc/systemd/system", description="Where the unit goes.")
    version: PipVersion = Field("6.1.1", description="JupyterHub version (pip).")
    lab: PipRequirement = Field("jupyterlab>=4.4", description="JupyterLab requirement (pip).")
    python: AbsPath = Field("/usr/bin/python3",
                            description="Interpreter the hub environment is created with.")
    prefix: AbsPath = Field("/opt/wodsync/hub", description="The hub environment (a venv).")
    config_dir: AbsPath = "/etc/jupyterhub"
    data_dir: AbsPath = Field("/var/lib/jupyterhub",
                              description="Database, cookie secret, PID files and logs.")
    proxy: AbsPath | None = Field(
        None, description="An installed configurable-http-proxy; default: install "
                          "`proxy_version` from npm under the prefix.")
    proxy_version: NpmVersion = "4.6.3"
    find_links: list[AbsPath] = Field(
        [], description="Local folders of wheels pip may install from (--find-links).")
    no_index: bool = Field(False, description="pip installs from find_links only (no index).")
    ip: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F.:]*$", max_length=64)] = Field(
        "", description="Public address the proxy listens on; empty means every interface.")
    port: Port = Field(
        80, description="Public port of the proxy. Below 1024 (only root may listen there): the "
                        "hub replaces its proxy at every start, and a student listening on a "
                        "free public port in that moment would receive every login form.")
    hub_port: Port = Field(
        81, description="The hub's loopback port, where the proxy sends `/` (login forms). Below "
                        "1024 so no student can listen on it while the hub restarts.")
    proxy_api_port: Port = Field(
        82, description="The proxy's loopback API port. Below 1024 so no student can listen on "
                        "it when the proxy starts and receive its token.")
    api_url: Url | None = Field(None, description="Default: the hub's own port on loopback.")
    public_url: PublicUrl | None = Field(
        None, description="Where participants log in, as they reach it (a DNS name, a reverse "
                          "proxy's https address), e.g. https://wod.example.org/; default: "
                          "http(s)://<address>:<port>/ of the host.")
    tls: HubTls | None = Field(
        None, description="The proxy serves https with this certificate and key (paths on "
                          "the host); absent: http, or TLS ended by a reverse proxy.")
    token: SecretRef | None = Field(None, description="Token of the wodsync hub service.")
    admins: list[LinuxName] = Field([], description="Hub admin users (existing accounts).")
    spawn_limit: Annotated[int, Field(ge=1, le=1000)] = Field(
        8, description="Students' servers starting at once (JupyterHub's concurrent_spawn_limit): "
                       "a burst of CREATEs asks for more; those start at the student's login.")
    start_timeout: Annotated[int, Field(ge=10, le=3600)] = Field(
        120, description="Seconds a student's server may take to start and answer "
                         "(JupyterHub's start_timeout and http_timeout, 60 and 30 by default): "
                         "on a host busy with a burst of starts, JupyterLab may answer after "
                         "30 s, and a spawn given up then leaves the student with no server.")
    server_nice: Annotated[int, Field(ge=0, le=19)] = Field(
        10, description="Niceness of students' servers and their kernels (0: none): starting "
                        "a server costs a core for a second or two, and the hub, its proxy, sshd "
                        "and wodsync's own seat operations must not wait behind it.")

    @model_validator(mode="after")
    def _ports_distinct(self) -> Hub:
        if len({self.port, self.hub_port, self.proxy_api_port}) < 3:
            raise ValueError("port, hub_port and proxy_api_port must be three different ports")
        return self

    @property
    def api(self) -> str:
        return self.api_url or f"http://127.0.0.1:{self.hub_port}/hub/api"

    def ports(self) -> list[tuple[str, int]]:
        """The public, hub and proxy API ports as (field, port)."""
        return [(name, getattr(self, name)) for name in HUB_PORTS]

    def unprivileged_ports(self, start: int = PRIVILEGED_BELOW) -> list[tuple[str, int]]:
        """The ports a student could listen on while the hub or its proxy is down (`start`: the
        host's `net.ipv4.ip_unprivileged_port_start`, Linux's default unless given)."""
        return [(name, port) for name, port in self.ports() if port >= start]

    def files(self) -> list[HubFile]:
        """The hub's configuration (it holds the token: root only), with systemd its unit
        (reloaded when it changes), and the students' JupyterLab settings defaults, each
        rendered from `templates/hub/`."""
        files = [HubFile(f"{self.config_dir}/jupyterhub_config.py",
                         "hub/jupyterhub_config.py.j2", 0o600)]
        if self.service == "systemd":
            files.append(HubFile(f"{self.unit_dir}/{HUB_UNIT}", "hub/jupyterhub.service.j2",
                                 0o644, ("systemctl", "daemon-reload")))
        # JupyterLab's defaults for every student (no "Jupyter news" prompt), read by the
        # students' servers from the environment's settings folder: no hub restart.
        files.append(HubFile(f"{self.prefix}/{LAB_OVERRIDES}", "hub/lab-overrides.json.j2",
                             0o644))
        return files


SysctlKey = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+(\.[a-z0-9_-]+)+$")]
SysctlValue = int | Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9 ._:-]{1,200}$")]


class SystemFile(Strict):
    """A host file rendered from `templates/`: where it goes, who owns it, what to run after."""

    template: RelPath = Field(description="Path under templates/.")
    path: AbsPath = Field(description="Destination on the host.")
    owner: LinuxName = "root"
    group: LinuxName = "root"
    mode: Annotated[str, StringConstraints(pattern=r"^0?[0-7]{3}$")] = Field(
        "0644", description="Octal mode as a string, e.g. '0644'.")
    on_change: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] = Field(
        [], description="Command (argv, no shell) run once after the file changed.")


class SystemFilesFile(Strict):
    """`catalog/system.yaml`: the system files every host gets."""

    files: list[SystemFile] = []


class Host(Strict):
    """A JupyterHub host: `hosts/<name>.yaml`; the file name is the host name."""

    address: Annotated[str, StringConstraints(pattern=HOST_ADDRESS_RE, max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    user: LinuxName = "root"
    identity: Annotated[str, StringConstraints(pattern=r"^~?(/[A-Za-z0-9._+-]+)+$")] | None = None
    host_key: Annotated[str, StringConstraints(pattern=HOST_KEY_RE),
                        AfterValidator(_host_key)] | None = Field(
        None, description="Pinned SSH host key, `<type> <base64>`; required for ssh transport.")
    location: Name
    pool: Name
    transport: Literal["ssh", "local"] = "ssh"
    role: Literal["hub", "appliance"] = Field(
        "hub", description="hub: seats of its location's workshops are given here; appliance: "
                           "a remote machine of workshops that name it (`appliance.hosts`): "
                           "its pool's accounts, no hub, no session placed here.")
    hub: Hub | None = Field(None, description="The host's JupyterHub; absent: no hub here.")
    packages: Packages = Field(Packages(), description="Packages of the hub environment.")
    variables: Variables = {}
    sysctl: dict[SysctlKey, SysctlValue] = Field(
        {}, description="Kernel values kept live on the host (drift is repaired).")
    state_dir: AbsPath = Field("/var/lib/wodsync",
                               description="Where wodsync keeps its inventory on the host.")
    home_acl: LinuxName | None = Field(
        None, description="Admin user given a read/write ACL on every student home.")
    limits: Limits | None = Field(None, description="Default limits of every seat of this "
                                                    "host (over the pool's).")

    def hub_url(self) -> str | None:
        """Where this host's participants log in (None: no hub here): the hub's `public_url`,
        else its own address and public port, https when the proxy serves TLS. The only
        builder of a student's URL: answers, pages and mails all take it from here."""
        if self.hub is None:
            return None
        if self.hub.public_url:
            return self.hub.public_url.rstrip("/") + "/"
        scheme = "https" if self.hub.tls else "http"
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{scheme}://{address}:{self.hub.port}/"

    @model_validator(mode="after")
    def _key_pinned(self) -> Host:
        # A skeleton written by `wodsync import` has no address yet: its placeholder error
        # (`catalog.placeholders`) says how to pin the key.
        if self.transport == "ssh" and self.host_key is None and self.address != PLACEHOLDER_ADDRESS:
            raise ValueError("ssh transport needs a pinned host_key (see `wodsync host add`)")
        return self

    @model_validator(mode="after")
    def _appliance_has_no_hub(self) -> Host:
        if self.role == "appliance" and self.hub is not None:
            raise located("appliance-hub", "an appliance host has no hub (remove `hub` or "
                          "set role: hub)", "hub")
        return self


# ---- catalog/portal.yaml: the registration portal's terms, screening and self-service --------

RATE_RE = r"^[1-9][0-9]{0,5}/(second|minute|hour|day)$"
SPAN_RE = r"^[1-9][0-9]{0,4}(m|h|d)$"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
MAIL_PATTERN_RE = rf"^([^@\s]+@)?{_LABEL}(\.{_LABEL})+$"  # a domain, or an address
Rate = Annotated[str, StringConstraints(pattern=RATE_RE)]
Span = Annotated[str, StringConstraints(pattern=SPAN_RE)]
MailPattern = Annotated[str, StringConstraints(pattern=MAIL_PATTERN_RE, max_length=320)]


class Terms(Strict):
    """What a participant accepts to register: a sentence and where to read the whole."""

    text: Title = "I accept the terms of use of this workshop portal."
    url: Url | None = None


class RateLimits(Strict):
    """Registrations allowed per folded e-mail address and per client (IP), e.g. `3/hour`."""

    per_address: Rate = "3/hour"
    per_client: Rate = "20/hour"


class SelfExtension(Strict):
    """How much a participant may extend their own session from its page: `step_hours` per
    click, `max_hours` in all (never past the session service's own cap)."""

    step_hours: Annotated[float, Field(gt=0, le=24)] = 1.0
    max_hours: Annotated[float, Field(ge=0, le=720)] = 2.0


class WodApi(Strict):
    """WoD's api-db routes that an existing wod-frontend calls, served under `prefix`
    (`wod-frontend`'s `WODAPIDBEXTURL` is then `<this controller's URL><prefix>`). Off unless
    `enabled`: these routes are public. `origins`: the frontend's origins allowed by CORS (its
    browser calls them from another site)."""

    enabled: bool = False
    prefix: Annotated[str, StringConstraints(pattern=r"^(/[A-Za-z0-9._-]+)+$",
                                             max_length=100)] = "/wod/api"
    origins: list[Annotated[str, StringConstraints(pattern=r"^https?://[^/\s]+$",
                                                   max_length=300)]] = Field(
        [], description="Origins of the wod-frontend site (scheme://host[:port]) its "
                        "browsers call these routes from.")

    @model_validator(mode="after")
    def _own_prefix(self) -> WodApi:
        if self.prefix == "/api/v1" or self.prefix.startswith("/api/v1/"):
            raise located("wod-api-prefix", "the prefix /api/v1 is wodsync's own API: "
                          "choose another one, e.g. /api (WoD's) or /wod/api", "prefix")
        return self


class PortalFile(Strict):
    """`catalog/portal.yaml` (optional): the registration portal's terms, who may register
    (`allow`/`deny`: domains or addresses), one live session per e-mail across workshops, rate
    limits, how long a confirmation link lasts (`confirm_ttl`, e.g. `24h`), self-service
    extension, and whether e-mail domains are checked in the DNS (`check_deliverability`)."""

    terms: Terms = Terms()
    allow: list[MailPattern] = Field([], description="Only these domains or addresses may "
                                     "register (empty: anyone not denied).")
    deny: list[MailPattern] = Field([], description="Domains or addresses refused.")
    one_live_session: bool = Field(True, description="One live session per e-mail across "
                                   "all workshops (case and +tags folded).")
    rate_limit: RateLimits = RateLimits()
    confirm_ttl: Span = "24h"
    extend: SelfExtension = SelfExtension()
    check_deliverability: bool = Field(False, description="Check that the e-mail's domain "
                                       "accepts mail (DNS MX/A), at registration.")
    wod_api: WodApi = Field(WodApi(), description="WoD's api-db routes for an existing "
                            "wod-frontend (An existing WoD portal).")


class Issuer(Strict):
    """Who awards the badges: the Open Badges issuer profile."""

    name: Title
    url: Url = Field(description="The issuer's home page.")
    email: Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$",
                                            max_length=320)] | None = None


class BadgesFile(Strict):
    """`catalog/badges.yaml`: the issuer of the badges and where their pages are public."""

    issuer: Issuer
    public_url: Url | None = Field(
        None, description="Public base URL of this controller's pages (`/badges/...`); "
                          "assertions name their issuer and key under it. Default: the URL "
                          "the request came to.")


FILE_MODELS: dict[str, type[BaseModel]] = {
    "workshop": Workshop,
    "replays": ReplaysFile,
    "students": StudentsFile,
    "locations": LocationsFile,
    "variables": VariablesFile,
    "host": Host,
    "system": SystemFilesFile,
    "portal": PortalFile,
    "badges": BadgesFile,
    "events": EventsFile,
}
