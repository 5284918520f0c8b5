"""Run a seat's notebooks, as the seat's own user: this file's source is what `wodsync test`
hands to `python -I -c` after dropping to the seat's uid (`seatrun.run_notebooks`).

It never runs as root and imports nothing of wodsync (the interpreter may be a host's hub
environment, which has nbclient but not wodsync): the request comes on stdin as JSON
(`{"home", "notebooks": [rel…], "cell_timeout", "startup_timeout"}`), one JSON answer goes to
stdout: per notebook its code cells, the cells run, the seconds, and the first error at its
cell (1-based, counting every cell as JupyterLab shows them). Each notebook gets its own kernel,
started in the notebook's folder as JupyterLab starts it.
"""

import json
import os
import sys
import time
from typing import Any

MAX_MESSAGE = 2000  # characters of an error's message sent back


def _error(cell: int | None, name: str, message: object) -> dict[str, Any]:
    return {"cell": cell, "name": name, "message": str(message)[:MAX_MESSAGE]}


def run_notebook(path: str, cell_timeout: int, startup_timeout: int) -> dict[str, Any]:
    """One notebook: {"code": n, "ran": k, "seconds": s, "error": None | {...}}."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    started = time.monotonic()
    result: dict[str, Any] = {"code": 0, "ran": 0, "seconds": 0.0, "error": None}
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # not a notebook: named, nothing run
        result["error"] = _error(None, type(exc).__name__, exc)
        return result
    result["code"] = sum(1 for c in nb.cells if c.cell_type == "code")
    folder = os.path.dirname(path)  # noqa: PTH120 (no pathlib needed on the seat's side)
    client = NotebookClient(nb, timeout=cell_timeout, startup_timeout=startup_timeout,
                            resources={"metadata": {"path": folder}})
    index: int | None = None
    try:
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells, start=1):
                if cell.cell_type != "code":
                    continue
                client.execute_cell(cell, index - 1)
                result["ran"] += 1
    except CellExecutionError as exc:
        result["error"] = _error(index, exc.ename, exc.evalue)
    except CellTimeoutError:
        result["error"] = _error(index, "CellTimeoutError",
                                 f"the cell ran longer than {cell_timeout} s")
    except DeadKernelError as exc:
        result["error"] = _error(index, "DeadKernelError", exc)
    except Exception as exc:  # no such kernel, a kernel that would not start: named
        result["error"] = _error(index, type(exc).__name__, exc)
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


def main() -> None:
    request = json.load(sys.stdin)
    home = request["home"]
    os.chdir(home)
    answer = {}
    for rel in request["notebooks"]:
        answer[rel] = run_notebook(os.path.join(home, rel),  # noqa: PTH118
                                   request["cell_timeout"],
                                   request["startup_timeout"])
    sys.stdout.write(json.dumps({"notebooks": answer}) + "\n")


if __name__ == "__main__":
    main()
