"""CPython through its shared library: harden the running interpreter's libpython into a temp dir, run CPython's
own regression tests with LD_LIBRARY_PATH pointing there, and require the same results as the unhardened run.

- test_libpython_quick: fast, runs in CI (a few quick test files).
- test_libpython_regrtest: `realworld` (CFIGUARD_REALWORLD=1): about 100 test files.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
from pathlib import Path

import pytest
from rw_regrtest import (
    LONG_TESTS,
    QUICK_TESTS,
    RegrRun,
    available_tests,
    compare_confirmed,
    failure_excerpt,
    proc_maps,
    run_regrtest,
)
from rw_support import Hardened, clean_env, harden, jobs, mapped_paths, out_dir, prepend_path, write_json


def _libpython() -> Path | None:
    """The libpython this very interpreter has mapped (Debian's python3.11 says Py_ENABLE_SHARED=1 in sysconfig
    but links libpython statically: only the process's own maps tell)."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and re.match(r"libpython[\d.]+\.so", os.path.basename(parts[5].strip())):
                return Path(parts[5].strip()).resolve()
    return None


LIBPYTHON = _libpython()
# The interpreter binary itself (not a venv's symlink: the loader's view is the same either way).
PYTHON = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
TESTDIR = Path(sysconfig.get_path("stdlib")) / "test"

pytestmark = pytest.mark.skipif(
    LIBPYTHON is None,
    reason=f"{PYTHON} does not load a shared libpython (built without --enable-shared?); nothing to harden",
)


@pytest.fixture(scope="module")
def hardened_libpython(tmp_path_factory: pytest.TempPathFactory) -> Hardened:
    assert LIBPYTHON is not None
    d = tmp_path_factory.mktemp("libpython")
    # The loader looks the library up by its SONAME (libpython3.11.so.1.0): the copy must carry that name.
    h = harden(LIBPYTHON, d / LIBPYTHON.name, d / "report.json")
    assert h.status == "ok", f"harden {LIBPYTHON}: {h.status}: {h.stderr[-2000:]}"
    assert not h.problems, h.problems
    return h


def _envs(h: Hardened) -> tuple[dict[str, str], dict[str, str]]:
    base = clean_env()
    hard = clean_env({"LD_LIBRARY_PATH": prepend_path("LD_LIBRARY_PATH", str(h.out.parent), base)})
    return base, hard


def _check_loaded(h: Hardened, env: dict[str, str]) -> None:
    """The hardened copy, and only it, is the libpython mapped into the interpreter."""
    maps = proc_maps(PYTHON, env)
    paths = mapped_paths(maps, h.out.name)
    assert paths == {str(h.out)}, f"libpython mapped from {paths or 'nowhere'}, expected {h.out}"


def _compare(tests: list[str], h: Hardened, work: Path, nproc: int) -> None:
    base_env, hard_env = _envs(h)
    _check_loaded(h, hard_env)
    envs = {"unhardened": base_env, "hardened": hard_env}
    base = run_regrtest(PYTHON, tests, work / "unhardened", base_env, jobs=nproc)
    hard = run_regrtest(PYTHON, tests, work / "hardened", hard_env, jobs=nproc)

    def rerun(files: list[str], which: str) -> RegrRun:
        return run_regrtest(PYTHON, files, work / f"{which}-rerun", envs[which], jobs=nproc)

    diffs, flaky = compare_confirmed(base, hard, rerun)
    write_json(
        work / "summary.json",
        {
            "libpython": str(LIBPYTHON),
            "counts": h.counts,
            "tests": tests,
            "unhardened": base.summary(),
            "hardened": hard.summary(),
            "differences": diffs,
            "flaky (differed once, not on a rerun)": flaky,
        },
    )
    assert base.cases, f"the unhardened run produced no test results:\n{failure_excerpt(base)}"
    assert not diffs, (
        "hardened libpython changes CPython's test results (also on a rerun):\n"
        + "\n".join(diffs)
        + f"\n--- hardened run (log in {work}) ---\n{failure_excerpt(hard)}"
    )


def test_libpython_quick(hardened_libpython: Hardened, tmp_path: Path) -> None:
    tests, missing = available_tests(TESTDIR, QUICK_TESTS)
    if not tests:
        pytest.skip(f"CPython's test package is not installed in {TESTDIR} ({missing} missing)")
    _compare(tests, hardened_libpython, tmp_path, nproc=2)


@pytest.mark.realworld
def test_libpython_regrtest(hardened_libpython: Hardened, tmp_path: Path) -> None:
    tests, missing = available_tests(TESTDIR, LONG_TESTS)
    if not tests:
        pytest.skip(f"CPython's test package is not installed in {TESTDIR}")
    work = out_dir(tmp_path) / "cpython-libpython"
    work.mkdir(parents=True, exist_ok=True)
    if missing:
        print(f"not in {TESTDIR}: {' '.join(missing)}")
    _compare(tests, hardened_libpython, work, nproc=jobs())
