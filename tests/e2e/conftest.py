"""End-to-end fixtures: build the sample programs once, harden them with cfiguard.

Flavour selection and the environment knobs (CFIGUARD_FULL_MATRIX, CFIGUARD_SAMPLES_DIR,
CFIGUARD_HARDEN_TIMEOUT) are described in e2e_support.py. Only the flavours that the
collected tests use are built. When clang is missing the Makefile skips the clang
flavours and their tests are skipped with a reason.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_support import (
    ATTACK_FLAVOURS,
    CLANG_SKIP,
    HAVE_CLANG,
    PROGRAMS,
    SAMPLE_FLAVOURS,
    SAMPLES,
    Hardened,
    flavours_of,
    harden,
    variant_of,
)

__all__ = ["harden"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "flavour" in metafunc.fixturenames:
        metafunc.parametrize("flavour", SAMPLE_FLAVOURS)
    if "attack_flavour" in metafunc.fixturenames:
        metafunc.parametrize("attack_flavour", ATTACK_FLAVOURS)
    if "program" in metafunc.fixturenames:
        metafunc.parametrize("program", PROGRAMS)


@pytest.fixture(scope="session")
def samples_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory holding the flavours the collected tests need, built once with make."""
    out = Path(os.environ.get("CFIGUARD_SAMPLES_DIR") or tmp_path_factory.mktemp("samples")).resolve()
    wanted: set[str] = set()
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        for key in ("flavour", "attack_flavour"):
            if key in params:
                wanted.add(params[key])
        if "program" in params:
            wanted.update(flavours_of(params["program"]))
    if not HAVE_CLANG:
        wanted = {w for w in wanted if variant_of(w)[1] != "clang"}
    if wanted:
        jobs = max(2, os.cpu_count() or 2)
        cmd = ["make", "--no-print-directory", "-C", str(SAMPLES), f"OUT={out}", f"-j{jobs}"]
        cmd += [f"{out}/{w}" for w in sorted(wanted)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
        if proc.returncode != 0:
            pytest.fail(
                f"building the samples failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
            )
    return out


@pytest.fixture(scope="session")
def binary(samples_dir: Path) -> Callable[[str], Path]:
    """binary(flavour) -> path of the built sample; skips clang flavours when clang is missing."""

    def get(name: str) -> Path:
        path = samples_dir / name
        if not path.exists():
            if variant_of(name)[1] == "clang" and not HAVE_CLANG:
                pytest.skip(CLANG_SKIP)
            pytest.fail(f"{name} was not built in {samples_dir}")
        return path

    return get


@pytest.fixture(scope="session")
def hardened(
    binary: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Hardened]:
    """hardened(flavour) -> Hardened; each flavour is hardened at most once per session."""
    out = tmp_path_factory.mktemp("hardened")
    cache: dict[str, Hardened] = {}

    def get(name: str) -> Hardened:
        if name not in cache:
            src = binary(name)
            dst, report = out / f"{name}.cfi", out / f"{name}.report.json"
            try:
                proc = harden(src, dst, report)
            except subprocess.TimeoutExpired as e:
                proc = subprocess.CompletedProcess(e.cmd, -1, "", f"timed out after {e.timeout} s")
            cache[name] = Hardened(name, proc, dst, report)
        return cache[name]

    return get
