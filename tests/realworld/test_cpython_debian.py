"""Debian's stripped /usr/bin/python3.11 (libpython linked in statically), hardened, runs the regression tests
of Debian's libpython3.11-testsuite package with the same results as the original binary.

`realworld` (CFIGUARD_REALWORLD=1). Setup: `apt-get install -y libpython3.11-testsuite` (docs/realworld.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rw_regrtest import (
    LONG_TESTS,
    RegrRun,
    available_tests,
    compare_confirmed,
    exe_of,
    failure_excerpt,
    run_regrtest,
)
from rw_support import clean_env, harden, jobs, out_dir, write_json

DEBIAN_PYTHON = Path("/usr/bin/python3.11")
DEBIAN_TESTDIR = Path("/usr/lib/python3.11/test")

pytestmark = [
    pytest.mark.realworld,
    pytest.mark.skipif(not DEBIAN_PYTHON.exists(), reason=f"{DEBIAN_PYTHON} is not installed"),
    pytest.mark.skipif(
        not (DEBIAN_TESTDIR / "test_grammar.py").exists(),
        reason="Debian's CPython tests are missing: apt-get install -y libpython3.11-testsuite",
    ),
]


def test_debian_python_regrtest(tmp_path: Path) -> None:
    work = out_dir(tmp_path) / "cpython-debian"
    work.mkdir(parents=True, exist_ok=True)
    # Same basename as the original: regrtest's workers re-run sys.executable, which is the hardened copy.
    hard_python = work / "bin" / DEBIAN_PYTHON.name
    hard_python.parent.mkdir(exist_ok=True)
    h = harden(DEBIAN_PYTHON, hard_python, work / "report.json")
    assert h.status == "ok", f"harden {DEBIAN_PYTHON}: {h.status}: {h.stderr[-2000:]}"
    assert not h.problems, h.problems
    tests, missing = available_tests(DEBIAN_TESTDIR, LONG_TESTS)
    if missing:
        print(f"not in {DEBIAN_TESTDIR}: {' '.join(missing)}")
    env = clean_env()
    assert exe_of(str(hard_python), env) == str(hard_python)
    base = run_regrtest(str(DEBIAN_PYTHON), tests, work / "unhardened", env, jobs=jobs())
    hard = run_regrtest(str(hard_python), tests, work / "hardened", env, jobs=jobs())
    pythons = {"unhardened": str(DEBIAN_PYTHON), "hardened": str(hard_python)}

    def rerun(files: list[str], which: str) -> RegrRun:
        return run_regrtest(pythons[which], files, work / f"{which}-rerun", env, jobs=jobs())

    diffs, flaky = compare_confirmed(base, hard, rerun)
    write_json(
        work / "summary.json",
        {
            "python": str(DEBIAN_PYTHON),
            "counts": h.counts,
            "tests": tests,
            "missing": missing,
            "unhardened": base.summary(),
            "hardened": hard.summary(),
            "differences": diffs,
            "flaky (differed once, not on a rerun)": flaky,
        },
    )
    assert base.cases, f"the unhardened run produced no test results:\n{failure_excerpt(base)}"
    assert not diffs, (
        "hardened python3.11 changes CPython's test results (also on a rerun):\n"
        + "\n".join(diffs)
        + f"\n--- hardened run (log in {work}) ---\n{failure_excerpt(hard)}"
    )
