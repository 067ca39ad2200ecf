"""Helpers shared by the integration tests (imported by name: tests/ has no packages)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "integrations"
SOURCES = ("main.c", "shapes.c", "shapes.h")  # the same program in every sample
# What pip prints when the package index cannot be reached (as opposed to any other failure).
OFFLINE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|"
    r"Name or service not known|Network is unreachable|Connection refused|ConnectTimeout|ReadTimeout|"
    r"No matching distribution found for (setuptools|msgpack|pytest)|from versions: none"
)


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (.ci/run installs it)")


def run(cmd: list, cwd: Path | None = None, env: dict | None = None, check: bool = True, timeout: int = 600):
    p = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and p.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"
        )
    return p


def reference_output(tmp: Path) -> str:
    """The sample program built by hand with gcc, unhardened: what every build must print."""
    d = tmp / "reference"
    d.mkdir()
    src = SAMPLES / "cmake"
    run(["gcc", "-O2", "-o", d / "app", src / "main.c", src / "shapes.c", f"-I{src}"])
    return run([d / "app"]).stdout


def info(cfiguard: Path, *files: Path, env: dict | None = None) -> list[dict]:
    p = run([cfiguard, "info", "--format", "json", *files], env=env)
    return json.loads(p.stdout)["files"]


def assert_hardened(cfiguard: Path, *files: Path, env: dict | None = None) -> None:
    """Each file carries a manifest (info) and passes the independent verifier."""
    for rec in info(cfiguard, *files, env=env):
        assert rec["status"] == "hardened", rec
        assert rec["coverage"]["unguarded"] == 0, rec
    p = run([cfiguard, "verify", *files], env=env, check=False)
    assert p.returncode == 0, p.stderr + p.stdout


def assert_not_hardened(cfiguard: Path, *files: Path, env: dict | None = None) -> None:
    for rec in info(cfiguard, *files, env=env):
        assert rec["status"] == "not hardened", rec
