"""GitHub webhooks: is this request really from GitHub, and does it say the branch moved?

A webhook makes the daemon fetch at once instead of at its next interval. Anyone can POST to
the endpoint, so nothing is fetched until the body's HMAC-SHA256 (`X-Hub-Signature-256`, keyed
with `WODSYNC_WEBHOOK_SECRET`) matches, compared in constant time. The functions here are pure
(bytes in, values out) so the API layer only wires them to HTTP: it enforces `MAX_BODY_BYTES`
before reading, answers 401 when `verify_signature` is False, 200 to a `ping`, and triggers a
fetch for a `push` to the followed branch.

A valid signature proves who signed a body, not when, nor for which repository. Two more
checks keep a signed delivery from being used again or elsewhere:

- `Deliveries` remembers what was accepted; a repeat is answered without fetching. The
  `X-GitHub-Delivery` id is not covered by the signature (a replay can carry a fresh one), so
  the body's digest is remembered too.
- `names_followed` compares the repository the payload names with the one followed: a
  delivery for another repository signed with the same secret (an organization's webhook, a
  secret shared between hooks) fetches nothing.

Neither can make the daemon deploy anything it would not deploy anyway: a webhook only makes
it fetch the followed branch now, and it deploys the head it fetched, never the payload's
`after`. What a replay could still cost is a fetch.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import posixpath
import re
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

MAX_BODY_BYTES = 1 << 20  # GitHub caps payloads at 25 MB; a push to a catalog is far smaller
SIGNATURE_HEADER = "X-Hub-Signature-256"
EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADER = "X-GitHub-Delivery"
SIGNATURE_RE = re.compile(r"sha256=([0-9a-fA-F]{64})")
ZERO_SHA = re.compile(r"0{40}(?:0{24})?")
REMEMBERED_DELIVERIES = 1000
# The names a payload's `repository` gives itself, as GitHub sends them.
REPOSITORY_NAMES = ("clone_url", "ssh_url", "git_url", "html_url", "full_name")

# What the daemon makes of a delivery: GitHub's event name reduced to the two it acts on.
EventType = Literal["ping", "push", "other"]


class WebhookError(ValueError):
    """A signed request whose body is not a webhook payload we can read (an HTTP 400)."""


@dataclass(frozen=True)
class WebhookEvent:
    """What a delivery says: its `type`; for a push, the `ref` and the new head `after` (None when
    the branch was deleted)."""

    type: EventType
    ref: str | None = None
    after: str | None = None
    name: str = ""
    repository: str | None = None
    names: tuple[tuple[str, str], ...] = ()  # (`clone_url`, value)…: see REPOSITORY_NAMES

    @property
    def branch(self) -> str | None:
        """`main` for `refs/heads/main`; None for a tag or no ref."""
        if self.ref and self.ref.startswith("refs/heads/"):
            return self.ref[len("refs/heads/"):]
        return None

    def moves(self, branch: str) -> bool:
        """True when this is a push to `branch` (so the daemon should fetch now)."""
        return self.type == "push" and self.branch == branch


def signature(secret: bytes, body: bytes) -> str:
    """The header value GitHub sends for `body`: `sha256=<hex>`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """True only for a well-formed `sha256=<hex>` header matching the body's HMAC-SHA256.

    An empty secret verifies nothing: a daemon without a webhook secret accepts no webhook.
    """
    if not secret or not header:
        return False
    match = SIGNATURE_RE.fullmatch(header.strip())
    if match is None:
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, match.group(1).lower())


def _payload(body: bytes) -> Any:
    """The JSON payload, sent as `application/json` or form-encoded as `payload=<json>`."""
    if len(body) > MAX_BODY_BYTES:
        raise WebhookError(f"webhook body of {len(body)} bytes is over the limit of "
                           f"{MAX_BODY_BYTES}")
    try:
        text = body.decode("utf-8")
        if text.startswith("payload="):
            text = parse_qs(text, strict_parsing=True)["payload"][0]
        return json.loads(text)
    except (UnicodeDecodeError, ValueError, KeyError) as exc:
        raise WebhookError(f"webhook body is not a JSON payload: {exc}") from None


def _text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def parse_event(event_name: str | None, body: bytes) -> WebhookEvent:
    """Read a (verified) delivery. A push must carry `ref` and `after`; anything else is
    `other`, ignored by the daemon. Raises `WebhookError` for an unreadable push or ping."""
    name = (event_name or "").strip().lower()
    if name not in ("ping", "push"):
        return WebhookEvent("other", name=name)
    data = _payload(body)
    if not isinstance(data, dict):
        raise WebhookError("webhook payload is not a JSON object")
    repo = data.get("repository")
    repository = _text(repo, "full_name") if isinstance(repo, dict) else None
    names = tuple((k, v) for k in REPOSITORY_NAMES
                  if isinstance(repo, dict) and (v := _text(repo, k)))
    if name == "ping":
        return WebhookEvent("ping", name=name, repository=repository, names=names)
    ref, after = _text(data, "ref"), _text(data, "after")
    if not ref or after is None:
        raise WebhookError("push payload without 'ref' and 'after'")
    if data.get("deleted") is True or ZERO_SHA.fullmatch(after):
        after = None
    elif not re.fullmatch(r"[0-9a-f]{40}(?:[0-9a-f]{24})?", after):
        raise WebhookError(f"push payload: 'after' is not a commit id: {after[:80]!r}")
    return WebhookEvent("push", ref=ref, after=after, name=name, repository=repository,
                        names=names)


# -- which repository ---------------------------------------------------------------------------

def _local_path(text: str) -> str | None:
    """`/srv/repo` for an absolute path or a `file://` URL; None for anything else."""
    if text.startswith("file:"):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            return None
        text = unquote(parts.path)
    if not text.startswith("/"):
        return None
    return "/" + posixpath.normpath(text).lstrip("/")


def _bare(path: str) -> str:
    """`owner/name` from `/owner/name.git/`: no leading or trailing `/`, no `.git`, lower case."""
    path = path.strip("/").removesuffix(".git").strip("/")
    return path.casefold()


def repository_key(url: str) -> str | None:
    """What names a repository in an URL, comparable across its spellings.

    `host/owner/name` for `https://user:token@Host:443/owner/name.git/`, `git@host:owner/name`,
    `ssh://…`, `git://…` alike: scheme, user, password and port dropped, `.git` and `/` trimmed,
    lower case (GitHub's names ignore case, and a wrong match costs one fetch of the followed
    branch while a missed one drops a webhook). A local path or `file://` URL stays the exact
    path (its case matters). None for what is neither.
    """
    text = url.strip()
    if not text or any(c in text for c in "\0\n\r"):
        return None
    local = _local_path(text)
    if local is not None:
        return local
    if "://" in text:
        parts = urlsplit(text)
        host = parts.hostname
        return f"{host}/{_bare(parts.path)}" if host and _bare(parts.path) else None
    scp = re.fullmatch(r"(?:[^@/\s]+@)?([^:/\s]+):(?!//)(.+)", text)  # git@host:owner/name.git
    if scp and _bare(scp.group(2)):
        return f"{scp.group(1).lower()}/{_bare(scp.group(2))}"
    return None


def names_followed(event: WebhookEvent, followed: str) -> bool:
    """Does the delivery name the followed repository (`followed`: the daemon's `--repo`)?

    The rule: a delivery that names repositories must name the followed one, by one of its
    URLs or, for an URL, by its `full_name` (the URL's path: `owner/name`). A delivery that
    names none is accepted only by a daemon that follows a local path: GitHub always names the
    repository, so a nameless delivery comes from a local sender holding the secret (the
    tests, the demo), who could as well name the path; for an URL it is ignored.
    """
    ours = repository_key(followed)
    if ours is None:
        return False
    if not event.names:
        return ours.startswith("/")
    for key, value in event.names:
        if key == "full_name":
            if not ours.startswith("/") and _bare(value) == ours.split("/", 1)[1]:
                return True
        elif repository_key(value) == ours:
            return True
    return False


def named_repository(event: WebhookEvent) -> str | None:
    """The repository a delivery names, for messages: its `full_name`, else its first URL."""
    return event.repository or (event.names[0][1] if event.names else None)


# -- replays ------------------------------------------------------------------------------------

class Deliveries:
    """The last `size` deliveries accepted (1000 by default), so a repeat fetches nothing.

    Kept in memory only: GitHub redelivers an event for days, but a fetch of the followed
    branch is all a replay can cause, so a restart forgetting them costs at most one fetch per
    replayed delivery. A delivery repeats an earlier one when its `X-GitHub-Delivery` id or
    its body was seen: GitHub keeps the id when it redelivers an event (and gives one event the
    same id for every hook), and the id is not signed, so a replay carrying a fresh id is
    caught by its body (no two pushes have the same body: `before`, `after`, `pushed_at`).
    Thread-safe.
    """

    def __init__(self, size: int = REMEMBERED_DELIVERIES) -> None:
        self.size = size
        self._seen: dict[str, str] = {}  # `id:…` or `body:<sha256>` → the delivery's id
        self._order: deque[tuple[str, ...]] = deque()  # each delivery's keys, oldest first
        self._lock = threading.Lock()

    def repeat_of(self, delivery: str | None, body: bytes) -> str | None:
        """None the first time (the delivery is then remembered); for a repeat, the id of the
        delivery it repeats (`""` when that one came without an id)."""
        delivery = (delivery or "").strip()[:200]
        keys = (f"body:{hashlib.sha256(body).hexdigest()}",
                *((f"id:{delivery}",) if delivery else ()))
        with self._lock:
            for key in keys:
                if key in self._seen:
                    return self._seen[key]
            self._seen.update(dict.fromkeys(keys, delivery))
            self._order.append(keys)
            while len(self._order) > self.size:
                for key in self._order.popleft():
                    self._seen.pop(key, None)
        return None
