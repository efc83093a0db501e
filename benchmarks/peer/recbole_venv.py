"""RecBole's virtualenv for ``benchmarks/peer_recbole.py``: created on first use, checked on reuse.

RecBole is a benchmark dependency only; seqrec never imports it. (Named ``recbole_venv``, not
``venv``: ``recbole_driver.py`` runs with this folder first on ``sys.path`` and must still find the
standard library's ``venv``.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from peer import PeerError

DEFAULT_VENV = Path(__file__).resolve().parent.parent / ".venv-recbole"
"""``benchmarks/.venv-recbole`` (git-ignored)."""

INSTALL_STEPS: list[tuple[str, list[str]]] = [
    ("CPU PyTorch first, so resolving RecBole's torch>=1.10 does not fetch a CUDA build",
     ["torch==2.13.0"]),
    ("RecBole itself (pulls numpy 2 / pandas 3, rolled back next)", ["recbole==1.2.1"]),
    ("RecBole 1.2.1 uses np.float_ (gone in numpy 2); pandas 3 needs numpy 2",
     ["numpy<2", "pandas<3"]),
]
"""What the RecBole virtualenv gets, in this order (one ``pip install`` per step)."""


def venv_python(venv: Path) -> Path:
    """The interpreter of virtualenv ``venv``."""
    return venv / "bin" / "python"


def _pip(python: Path, packages: list[str], why: str) -> None:
    """``python -m pip install packages``, printing what is installed and why."""
    print(f"[install] pip install {' '.join(repr(p) if '<' in p else p for p in packages)}   # {why}",
          flush=True)
    proc = subprocess.run([str(python), "-m", "pip", "install", *packages], text=True,
                          capture_output=True)
    if proc.returncode != 0:
        raise PeerError(f"pip install {' '.join(packages)} failed in {python.parent.parent} "
                        f"(exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    for line in proc.stdout.splitlines():
        if line.startswith("Successfully installed"):
            print(f"[install]   {line}", flush=True)


def venv_versions(python: Path) -> dict[str, str]:
    """Versions of the packages that matter, as the venv's interpreter reports them."""
    code = ("import json, importlib.metadata as m\n"
            "out = {}\n"
            "for p in ('recbole', 'torch', 'numpy', 'pandas', 'scipy'):\n"
            "    try: out[p] = m.version(p)\n"
            "    except m.PackageNotFoundError: out[p] = None\n"
            "print(json.dumps(out))")
    proc = subprocess.run([str(python), "-c", code], text=True, capture_output=True)
    if proc.returncode != 0:
        raise PeerError(f"cannot run {python}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def venv_ready(python: Path) -> bool:
    """True when the venv has recbole 1.2.1, torch 2.13.0 and numpy < 2."""
    if not python.exists():
        return False
    v = venv_versions(python)
    return (v.get("recbole") == "1.2.1" and (v.get("torch") or "").startswith("2.13.0")
            and (v.get("numpy") or "9").split(".")[0] == "1")


def ensure_venv(venv: Path, skip_install: bool) -> Path:
    """Create (or reuse) the RecBole virtualenv; returns its python. Prints what it installs."""
    python = venv_python(venv)
    if venv_ready(python):
        print(f"[install] reusing {venv}: {venv_versions(python)}", flush=True)
        return python
    if skip_install:
        raise PeerError(f"--skip-install, but {venv} has no working RecBole 1.2.1 (needs recbole "
                        "1.2.1, torch 2.13.0, numpy<2); run once without --skip-install")
    if not python.exists():
        print(f"[install] creating virtualenv {venv} with {sys.executable}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    for why, packages in INSTALL_STEPS:
        _pip(python, packages, why)
    check = subprocess.run([str(python), "-m", "pip", "check"], text=True, capture_output=True)
    print(f"[install] pip check: {check.stdout.strip() or check.stderr.strip()}", flush=True)
    if not venv_ready(python):
        raise PeerError(f"{venv} still lacks a working RecBole after installing: {venv_versions(python)}")
    print(f"[install] done: {venv_versions(python)}", flush=True)
    return python
