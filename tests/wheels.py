"""A wheel built by hand (zip + metadata), so package tests need no registry and no build tool."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def kernel_wheel(folder: Path, dist: str, version: str, kernel: str) -> Path:
    """A pure-Python wheel `dist==version` that ships the kernelspec `kernel` (in data/share)."""
    module = dist.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    spec = {"argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"{kernel} (wodsync test)", "language": "python"}
    files = {
        f"{module}/__init__.py": b'"""A test kernel package."""\n',
        f"{module}-{version}.data/data/share/jupyter/kernels/{kernel}/kernel.json":
            json.dumps(spec).encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
                            .encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: wodsync-tests\n"
                         b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [_record_line(p, d) for p, d in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return target
