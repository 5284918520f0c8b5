"""The CI runner as a `local` host of every location, for `wodsync test` in a pull request.

A catalog's hosts are real machines reached over SSH; the pull-request workflow runs the
changed workshops on the runner itself instead. `runner_hosts` describes it as one `local` host
per location, with the pool and the template variables of that location's first host (its
notebooks render exactly as there) and no hub: files the workflow writes into its own checkout
(`hosts/ci-runner-<location>.yaml`), applies, and never commits.
"""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML

from wodsync.catalog.loader import Catalog

PREFIX = "ci-runner-"


def runner_hosts(catalog: Catalog) -> dict[str, str]:
    """`hosts/<name>.yaml` path → its text, one per location that has a host."""
    files = {}
    for location in sorted({h.location for h in catalog.hosts.values()}):
        first = catalog.hosts[sorted(catalog.hosts_in(location))[0]]
        data: dict[str, Any] = {"address": "localhost", "transport": "local",
                                "location": location, "pool": first.pool}
        if first.variables:
            data["variables"] = first.model_dump(mode="json", include={"variables"})["variables"]
        files[f"hosts/{PREFIX}{location}.yaml"] = _dump(data)
    return files


def _dump(data: dict[str, Any]) -> str:
    out = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump(data, out)
    return ("# yaml-language-server: $schema=../schemas/host.schema.json\n"
            "# Written by `wodsync test --runner-hosts` for CI: this runner as a local host.\n"
            + out.getvalue())
