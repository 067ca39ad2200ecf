"""Fixtures for the integration tests: the real `cfiguard` program, and the sample projects.

Every build-system test runs the real tool (cmake, meson + ninja, make, bazel) on a copy of a project in
samples/integrations/, with the `cfiguard` of this checkout first on PATH, exactly as a user with an
activated venv would. A tool that is not installed skips its test with the reason; .ci/run installs them
all, so CI runs every one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from integ_support import REPO, SAMPLES


@pytest.fixture(scope="session")
def cfiguard_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The installed console script when it runs this checkout (an editable install), else a wrapper that
    runs `python -m cfiguard.cli` from this checkout. Either way, the code under test is this tree's."""
    installed = Path(sys.executable).parent / "cfiguard"
    if installed.exists():
        p = subprocess.run([str(installed), "--cmake-dir"], capture_output=True, text=True)
        if p.returncode == 0 and Path(p.stdout.strip()).resolve().is_relative_to(REPO / "cfiguard"):
            return installed
    d = tmp_path_factory.mktemp("bin")
    wrapper = d / "cfiguard"
    wrapper.write_text(
        f'#!/bin/sh\nPYTHONPATH="{REPO}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{sys.executable}" '
        '-m cfiguard.cli "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture(scope="session")
def tool_env(cfiguard_exe: Path) -> dict[str, str]:
    """The environment for build tools: this checkout's cfiguard first on PATH, no cache unless asked."""
    env = dict(os.environ)
    env["PATH"] = f"{cfiguard_exe.parent}{os.pathsep}{env.get('PATH', '')}"
    for k in ("CFIGUARD_CACHE", "CFIGUARD_DEBUG", "SOURCE_DATE_EPOCH", "MAKEFLAGS", "MFLAGS"):
        env.pop(k, None)
    return env


@pytest.fixture
def sample(tmp_path: Path):
    """A fresh copy of samples/integrations/<name> (so builds never write into the source tree)."""

    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(SAMPLES / name, dst)
        return dst

    return copy
