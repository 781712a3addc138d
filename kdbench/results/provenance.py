"""Provenance: what made a report (kdbench, python, torch, libraries, installed plugins, git commit)
and what its runs recorded (kdbench, task and method versions, devices). Written to a report
folder's ``versions.json`` and shown in the HTML report."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path
from typing import Optional

import torch

from kdbench import __version__
from kdbench.plugins import load_plugins
from kdbench.results.folder import Results

LIBRARIES = ("numpy", "pandas", "matplotlib", "plotly", "tabulate", "jinja2", "pydantic")


def git_commit(path: Path = Path(__file__).resolve().parents[2]) -> Optional[dict]:
    """The commit of the kdbench source tree at ``path`` (and whether it has uncommitted
    changes), or None when kdbench is not running from a git checkout."""
    if not (path / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(dirty)}


def _module_version(name: str) -> Optional[str]:
    try:
        module = __import__(name)
    except ImportError:
        return None
    return getattr(module, "__version__", None)


def versions(results: Results) -> dict:
    """What made this report (kdbench, python, libraries, installed plugins, git commit)
    and what the runs recorded (kdbench versions, task and method versions, devices)."""
    registry = load_plugins(())
    plugins = [{"kind": kind, "name": info.name, "version": str(info.version), "from": info.source}
               for kind in ("task", "method", "launcher") for info in getattr(registry, kind + "s").values()]
    runs = results.runs()
    used = {"kdbench": [], "tasks": [], "methods": [], "devices": []}
    if not runs.empty:
        used = {
            "kdbench": sorted({str(v) for v in runs.kdbench_version.dropna()}),
            "tasks": sorted({f"{t} {v}" for t, v in zip(runs.task_name, runs.task_version)}),
            "methods": sorted({f"{m} {v}" for m, v in zip(runs.method_name, runs.version)}),
            "devices": sorted({str(d) for d in runs.device.dropna()}),
        }

    return {
        "kdbench": __version__, "git": git_commit(), "python": sys.version.split()[0],
        "platform": platform.platform(), "torch": torch.__version__, "cuda": torch.version.cuda,
        **{name: _module_version(name) for name in LIBRARIES},
        "plugins": plugins, "plugin_failures": dict(registry.failures), "used_by_runs": used,
    }
