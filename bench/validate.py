"""Benchmark: how long `wodsync validate` takes on a large catalog (prints figures).

Generates a catalog of N workshops (default 100), each with three small notebooks that use
per-seat, global and host variables, two hosts and a 2000-seat pool, then times the whole
validation (load, models, cross-file rules, template checks) in-process: one cold run, then the
median of --runs warm runs against a floor measured the same way in the same run: reading and
parsing every file of the catalog (YAML and JSON) and nothing else, the least any validator of
those files must do. With the WoD corpus beside the project (../shared/corpus) it also times
importing and validating WoD's 20 real workshops.

    .venv/bin/python bench/validate.py [--workshops 100] [--runs 5]
    .venv/bin/python bench/validate.py --workshops 2 --runs 1     # the smoke test's size
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from ruamel.yaml import YAML

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


def parse_only(root: Path) -> float:
    """The floor: every YAML and notebook file of `root` read and parsed, nothing checked."""
    yaml = YAML(typ="safe")
    start = time.perf_counter()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".yaml", ".yml"):
            yaml.load(path.read_text(encoding="utf-8"))
        elif path.suffix in (".ipynb", ".json"):
            json.loads(path.read_text(encoding="utf-8"))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workshops", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--corpus", type=Path, default=CORPUS,
                        help="WoD's corpus (wod-notebooks/ and group_vars); skipped when absent.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bench"
        generate(root, args.workshops)
        cold, count = timed(root)
        warm, floor = [], []
        for _ in range(args.runs):  # alternated: a drift of the machine hits both sides
            warm.append(timed(root)[0])
            floor.append(parse_only(root))
        files = sum(1 for p in root.rglob("*") if p.is_file())
        ours, theirs = statistics.median(warm), statistics.median(floor)
        print(f"validate: {count} workshops, {files} files, 2 hosts")
        print(f"  {'cold run (the first in this process)':<40} {cold:.3f} s   target ≤ 1 s "
              f"for 100 workshops: {'met' if cold <= 1.0 else 'MISSED'}")
        print(f"  {f'validate, median of {args.runs} runs':<40} {ours:.3f} s")
        print(f"  {f'floor: parse every file, median of {args.runs}':<40} {theirs:.3f} s")
        print(f"  validate = {ours / theirs:.1f}× the floor (same runs, alternated)")
        corpus = args.corpus
        if (corpus / "wod-notebooks").is_dir():
            out = Path(tmp) / "corpus"
            start = time.perf_counter()
            result = import_wod(corpus / "wod-notebooks", out,
                                sorted(corpus.glob("*group_vars*.yml")))
            imported = time.perf_counter() - start
            elapsed, _ = timed(out)
            print(f"WoD corpus: import {len(result.workshops)} workshops {imported:.3f} s "
                  f"({len(result.diagnostics)} located warnings); validate {elapsed:.3f} s")


if __name__ == "__main__":
    main()
