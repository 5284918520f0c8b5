"""Benchmark: many participants registering at once through the pages (prints figures).

Why: a workshop's announcement sends everyone to the registration page in the same minute. This
measures what they go through on real components: `wodsync serve` (uvicorn, its mail sender) in
a process of its own, an aiosmtpd sink keeping the mails in a Maildir, a local host with a pool
of --count + --single seats (prefix `wodbj`, uids from 45801, homes under a temporary folder), one
workshop. First --single participants (default 10) register and click one after another;
then --count participants (default 100) fill the form at once, each confirmation link is read
from its mail in the sink and all the links are clicked at once.

Figures, each beside a baseline measured in the same run:
- click → session page with the credentials: p50 and p95 of the clicks one at a time, and of
  the clicks made at once, each beside the same participants opening their session page again
  (the page without the CREATE behind it);
- the mails: every confirmation and every credentials mail delivered, none twice (counted by
  recipient and Message-ID in the Maildir).

Every account it made is removed at the end, also on failure.

    .venv/bin/python bench/journey.py [--count 100] [--single 10]
    .venv/bin/python bench/journey.py --count 3 --single 1          # the smoke test's size
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from wodsync.mail.sink import Sink

import apiserver
from helpers import remove_test_accounts
from helpers import wodsync as run_wodsync
from sshd import free_port

PREFIX, UID_BASE = "wodbj", 45800  # seats 45801-45999 at most (the bench uids end there)
TOKEN = "bench-journey-" + str(time.time_ns())
PORTAL = ("terms: {text: I accept., url: https://bench.example/terms}\n"
          "rate_limit: {per_address: 5/hour, per_client: 100000/hour}\n")
WAIT_S = 300.0  # an upper bound for the mails, not a figure


def write_catalog(root: Path, homes: Path, count: int, sink_port: int, base: str) -> None:
    files = {
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml": f"pools:\n  bench:\n    prefix: {PREFIX}\n    first: 1\n"
                                 f"    last: {count}\n    uid_base: {UID_BASE}\n"
                                 f"    gid_base: {UID_BASE}\n    home_root: {homes}\n",
        "catalog/workshops/WKSHP-Rush/workshop.yaml":
            f"name: Rush\ncapacity: {count}\nseats: {{first: 1, last: {count}}}\n"
            "location: lab\nduration: 2\n",
        "catalog/workshops/WKSHP-Rush/1-Intro.ipynb":
            '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n',
        "catalog/portal.yaml": PORTAL,
        "catalog/mail.yaml": f"smtp: {{host: 127.0.0.1, port: {sink_port}}}\n"
                             f"from: Bench <bench@bench.example>\nportal_url: {base}\n",
        "hosts/lab.yaml": f"address: localhost\ntransport: local\nlocation: lab\npool: bench\n"
                          f"state_dir: {root.parent}/state-lab\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def register(base: str, email: str) -> None:
    """A participant fills the form (its CSRF cookie and field from the page)."""
    http = requests.Session()
    page = http.get(f"{base}/register", timeout=120)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    sent = http.post(f"{base}/register", timeout=120, data={
        "workshop": "WKSHP-Rush", "name": f"Participant {email}", "email": email,
        "company": "Bench", "terms": "yes", "csrf": csrf})
    assert "We sent a link" in sent.text, sent.text[-500:]


def timed_get(url: str) -> tuple[float, str, str]:
    """Seconds from the click to the session page, the page's URL and its HTML."""
    start = time.perf_counter()
    got = requests.get(url, timeout=300)
    return time.perf_counter() - start, got.url, got.text


def wait_mails(sink: Sink, subject: str, domain: str, count: int) -> dict[str, list[str]]:
    """Recipient → Message-IDs of the mails with `subject` to addresses at `domain`, once
    `count` recipients have one (or the wait is over)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        found: dict[str, list[str]] = {}
        for m in sink.messages():
            if subject in str(m["Subject"]) and str(m["To"]).endswith(f"@{domain}"):
                found.setdefault(str(m["To"]), []).append(str(m["Message-ID"]))
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(name: str, times: list[float], baseline: list[float]) -> None:
    print(f"{name}: p50 {statistics.median(times) * 1000:.0f} ms, p95 "
          f"{pct(times, 0.95) * 1000:.0f} ms   (baseline, the session page alone: p50 "
          f"{statistics.median(baseline) * 1000:.0f} ms, p95 {pct(baseline, 0.95) * 1000:.0f} ms)")


def mails_line(kind: str, found: dict[str, list[str]], count: int) -> bool:
    """Delivered once each: one mail per recipient, no Message-ID seen twice."""
    twice = sum(len(ids) - 1 for ids in found.values()) + sum(
        n - 1 for n in Counter(i for ids in found.values() for i in ids).values())
    print(f"{kind} mails: {len(found)}/{count} delivered, {twice} twice")
    return len(found) == count and twice == 0


def confirm_links(sink: Sink, domain: str, count: int) -> tuple[dict[str, list[str]], list[str]]:
    """The confirmation mails to `domain` once `count` recipients have one, and their links."""
    confirms = wait_mails(sink, "Confirm", domain, count)
    texts = {str(m["To"]): m.get_body(("plain",)).get_content() for m in sink.messages()
             if "Confirm" in str(m["Subject"]) and str(m["To"]) in confirms}
    return confirms, [re.search(r"http://\S+/confirm/\S+", text)[0]
                      for text in texts.values()]


def one_at_a_time(base: str, sink: Sink, single: int) -> bool:
    """`single` participants who register and click alone: the click on an idle portal."""
    clicks = []
    for n in range(single):
        email = f"s{n}@alone.example"
        register(base, email)
        wait_mails(sink, "Confirm", "alone.example", n + 1)
        link = re.search(r"http://\S+/confirm/\S+", sink_text(sink, email))[0]
        clicks.append(timed_get(link))
    pages = [timed_get(url) for _, url, _ in clicks]
    report(f"{single} clicks one at a time → session page", [t for t, _, _ in clicks],
           [t for t, _, _ in pages])
    return all('id="password"' in text for _, _, text in clicks)


def run(count: int, single: int, tmp: Path) -> bool:
    root, homes = tmp / "repo", tmp / "homes"
    homes.mkdir(mode=0o755)
    (tmp / "controller").mkdir()
    with Sink(tmp / "mail", port=free_port()) as sink:
        env = {**os.environ, "WODSYNC_API_TOKEN": TOKEN}
        server = apiserver.Server(root, tmp / "controller", env, TOKEN)
        write_catalog(root, homes, count + single, sink.port, server.base)
        applied = run_wodsync("apply", "--yes", "--root", root, env=env)
        assert applied.returncode == 0, applied.stdout[-2000:] + applied.stderr[-2000:]
        server.start()
        try:
            ok = one_at_a_time(server.base, sink, single) if single else True
            with ThreadPoolExecutor(count) as pool:
                list(pool.map(lambda n: register(server.base, f"p{n}@rush.example"),
                              range(count)))
            confirms, links = confirm_links(sink, "rush.example", count)
            with ThreadPoolExecutor(count) as pool:
                clicks = list(pool.map(timed_get, links))
            shown = [text for _, _, text in clicks if 'id="password"' in text]
            print(f"{count} confirmation clicks at once: {len(shown)} session pages with "
                  "credentials")
            with ThreadPoolExecutor(count) as pool:
                again = list(pool.map(timed_get, [url for _, url, _ in clicks]))
            report(f"{count} clicks at once → session page", [t for t, _, _ in clicks],
                   [t for t, _, _ in again])
            ok &= mails_line("confirmation", confirms, count)
            ready = {**wait_mails(sink, "is ready", "rush.example", count),
                     **wait_mails(sink, "is ready", "alone.example", single)}
            ok &= mails_line("credentials", ready, count + single)
            return ok and len(shown) == count
        finally:
            for s in server.call("GET", "/api/v1/sessions?limit=500").json().get("items", []):
                if s["state"] not in ("ended", "failed"):
                    server.call("POST", f"/api/v1/sessions/{s['id']}/purge")
            server.stop()


def sink_text(sink: Sink, to: str) -> str:
    for m in sink.messages():
        if str(m["To"]) == to and "Confirm" in str(m["Subject"]):
            return m.get_body(("plain",)).get_content()
    raise AssertionError(f"no confirmation mail to {to}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--single", type=int, default=10)
    args = parser.parse_args()
    if not 1 <= args.count + args.single <= 199:
        parser.error("--count + --single: 1 to 199 seats (uids 45801-45999)")
    tmp = Path(tempfile.mkdtemp(prefix="wodsync-bench-journey-"))
    tmp.chmod(0o755)
    remove_test_accounts(PREFIX, UID_BASE)
    try:
        ok = run(args.count, args.single, tmp)
    finally:
        remove_test_accounts(PREFIX, UID_BASE)
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
