"""The catalog: workshops, replays, pools, locations, variables and hosts, as validated YAML.

`validate(root)` is the whole check an author or CI runs: load every file, validate each against
its model, then apply the cross-file rules and the template checks.
"""

from __future__ import annotations

from pathlib import Path

from wodsync.catalog.loader import Catalog, load_catalog
from wodsync.catalog.rules import run_rules
from wodsync.diagnostics import Diagnostic

__all__ = ["Catalog", "load_catalog", "validate"]


def validate(root: Path) -> tuple[Catalog, list[Diagnostic]]:
    """Everything wrong with the repository at `root`, sorted, with the loaded catalog."""
    # The template checks render, and the renderer reads the catalog's models: imported here,
    # not with the package, so that `wodsync.render` ← `wodsync.catalog` is no import cycle.
    from wodsync.catalog.templates import check_system_templates, check_workshop_templates
    from wodsync.mail.templates import check_templates as check_mail_templates

    catalog = load_catalog(root)
    found = list(catalog.diagnostics)
    if catalog.docs:
        found += run_rules(catalog)
        found += check_workshop_templates(catalog)
        found += check_system_templates(catalog)
        found += check_mail_templates(catalog)
    return catalog, sorted(set(found))
