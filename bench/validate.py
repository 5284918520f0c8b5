"""Benchmark: how long `wodsync validate` takes on a large catalog (prints figures).

Generates a catalog of N workshops (default 100), each with three small notebooks that use
per-seat, global and host variables, two hosts and a 2000-seat pool, then times the whole
validation (load, models, cross-file rules, template checks) in-process: one cold run and the
best of several warm runs. With the WoD corpus beside the project (../shared/corpus) it also
times importing and validating WoD's 20 real workshops.

    .venv/bin/python bench/validate.py [--workshops 100] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from wodsync.authoring.importer import import_wod
from wodsync.catalog import validate

PROJECT = Path(__file__).resolve().parent.parent
CORPUS = PROJECT.parent / "shared" / "corpus"


def _notebook(i: int, part: int) -> str:
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": [
            f"# Workshop {i}, part {part}\n", "Welcome {{ STUDENT }} (seat {{ STDID }}) to "
            "{{ BRANDING }} on {{ WODBEFQDN }}.\n"]},
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
         "source": ["port = {{ PORT }}\n", "print('{{ STUDENT }}', port)\n"]},
        {"cell_type": "markdown", "metadata": {}, "source": [
            "{% if MODEWS == 'CHLG' %}Challenge{% else %}Workshop{% endif %} mode.\n"]},
    ]
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
                      indent=1)


def generate(root: Path, count: int) -> None:
    """A valid catalog of `count` workshops of 20 seats each in one location."""
    shutil.copytree(PROJECT / "schemas", root / "schemas")
    (root / "catalog/workshops").mkdir(parents=True)
    (root / "hosts").mkdir()
    (root / "catalog/students.yaml").write_text(
        "pools:\n  student:\n    prefix: student\n    first: 1\n    last: 2000\n"
        "    uid_base: 2000\n    gid_base: 2000\n    home_root: /student\n")
    (root / "catalog/locations.yaml").write_text("locations:\n  - name: emea\n")
    (root / "catalog/variables.yaml").write_text("BRANDING: Bench\n")
    for h in ("hub-a", "hub-b"):
        (root / f"hosts/{h}.yaml").write_text(
            f"address: {h}.example.org\nhost_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID0QtXp2XV"
            "+CB64sWR6MkzxKmIoojZjJzDIaJyg1oI5P\nlocation: emea\npool: student\n"
            f"variables:\n  WODBEFQDN: {h}.example.org\n")
    for i in range(count):
        folder = root / f"catalog/workshops/WKSHP-Bench{i:03d}"
        folder.mkdir()
        first = 1 + 20 * i
        (folder / "workshop.yaml").write_text(
            f"name: Bench workshop {i}\ndescription: Generated for the benchmark.\n"
            f"capacity: 20\nseats: {{first: {first}, last: {first + 19}}}\nlocation: emea\n"
            f"duration: 2\ncategory: [Bench]\nvariables:\n  PORT: {8000 + i}\n"
            "kernels: [python3]\n")
        for part in range(3):
            (folder / f"{part}-Part.ipynb").write_text(_notebook(i, part))


def timed(root: Path) -> tuple[float, int]:
    start = time.perf_counter()
    catalog, found = validate(root)
    elapsed = time.perf_counter() - start
    errors = [d for d in found if d.is_error]
    if errors and "corpus" not in str(root):
        raise SystemExit("generated catalog is invalid:\n" + "\n".join(d.text() for d in errors))
    return elapsed, len(catalog.workshops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workshops", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bench"
        generate(root, args.workshops)
        cold, count = timed(root)
        warm = [timed(root)[0] for _ in range(args.runs)]
        files = sum(1 for p in root.rglob("*") if p.is_file())
        print(f"validate: {count} workshops, {files} files, 2 hosts")
        print(f"  cold run      {cold:.3f} s")
        print(f"  warm best     {min(warm):.3f} s   median {statistics.median(warm):.3f} s "
              f"over {args.runs} runs")
        print(f"  target        ≤ 1.000 s for 100 workshops: "
              f"{'met' if max(cold, min(warm)) <= 1.0 else 'MISSED'}")
        if (CORPUS / "wod-notebooks").is_dir():
            out = Path(tmp) / "corpus"
            start = time.perf_counter()
            result = import_wod(CORPUS / "wod-notebooks", out,
                                sorted(CORPUS.glob("*group_vars*.yml")))
            imported = time.perf_counter() - start
            elapsed, _ = timed(out)
            print(f"WoD corpus: import {len(result.workshops)} workshops {imported:.3f} s "
                  f"({len(result.diagnostics)} located warnings); validate {elapsed:.3f} s")


if __name__ == "__main__":
    main()
