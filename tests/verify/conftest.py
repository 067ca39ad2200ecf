"""Fixtures for the verifier tests: a small C program compiled at test time (PIE and non-PIE) and hardened with
the real CLI, so the verifier is always tested against what the current rewriter produces."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from mutants import Built, run_cli

HERE = Path(__file__).parent
FLAVOURS = {"pie": ["-fPIE", "-pie"], "nopie": ["-fno-pie", "-no-pie"]}


@pytest.fixture(scope="session")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    d = tmp_path_factory.mktemp("verify-build")
    out = {}
    for flavour, flags in FLAVOURS.items():
        plain = d / f"prog.{flavour}"
        subprocess.run(["gcc", "-O2", "-g0", *flags, str(HERE / "prog.c"), "-o", str(plain)], check=True)
        hardened = d / f"prog.{flavour}.hardened"
        p = run_cli("harden", plain, "-o", hardened)
        assert p.returncode == 0, p.stderr
        expected = subprocess.run([str(plain)], capture_output=True, text=True, check=True).stdout
        out[flavour] = Built(flavour, plain, hardened, expected)
    return out


@pytest.fixture(params=sorted(FLAVOURS))
def built(request: pytest.FixtureRequest, builds: dict[str, Built]) -> Built:
    return builds[request.param]
