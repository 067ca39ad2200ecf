"""numpy with every extension module of its wheel hardened, including the bundled libraries of `numpy.libs`
(OpenBLAS, libgfortran, libquadmath: found through RPATH $ORIGIN/../../numpy.libs), in a copy of the install.

`realworld` (CFIGUARD_REALWORLD=1). A fresh `python -m venv --copies` gets a copy of the running interpreter's
numpy (or, if it has none, `pip install numpy` from PyPI); pytest and hypothesis come from the running
environment. numpy's fast tests (`-m "not slow"`) run on the unhardened copy, then on the hardened one, and the
outcome of every test case must match. CFIGUARD_NUMPY_TESTS selects the test modules (default below; `all` for
`--pyargs numpy`, about 30 min unhardened on 2 cores).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from rw_support import Coverage, clean_env, harden, is_elf, jobs, out_dir, write_json

pytestmark = pytest.mark.realworld

# Test packages/modules of numpy (dotted, under numpy.) run by default: a few minutes unhardened. They go
# through _multiarray_umath, _umath_linalg + OpenBLAS, pocketfft, every random generator, and the test-only
# extension modules (_rational_tests, _umath_tests, ...).
DEFAULT_TESTS = [
    "linalg.tests",
    "fft.tests",
    "random.tests",
    "polynomial.tests",
    "ma.tests",
    "matrixlib.tests",
    "lib.tests",
    "_core.tests.test_umath",
    "_core.tests.test_ufunc",
    "_core.tests.test_multiarray",
    "_core.tests.test_dtype",
    "_core.tests.test_numeric",
    "_core.tests.test_einsum",
    "_core.tests.test_scalarmath",
    "_core.tests.test_datetime",
    "_core.tests.test_simd",
    "_core.tests.test_nditer",
    "_core.tests.test_item_selection",
    "_core.tests.test_custom_dtypes",
    "_core.tests.test_stringdtype",
]

PY_SNIPPET = """
import numpy, sys
print(numpy.__file__)
print(numpy.__version__)
a = numpy.linspace(0, 1, 200).reshape(20, 10)
print(round(float(numpy.linalg.svd(a @ a.T, compute_uv=False).sum()), 6))
"""


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def make_venv(dest: Path) -> Path:
    """A venv with its own copy of numpy (and numpy.libs); pytest/hypothesis from the running environment.
    Returns the venv's python."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--copies", "--without-pip", str(dest)], check=True, timeout=600
    )
    sp = _site_packages(dest)
    spec = importlib.util.find_spec("numpy")
    if spec is not None and spec.origin:
        src = Path(spec.origin).parent
        for name in os.listdir(src.parent):
            if name in ("numpy", "numpy.libs") or (name.startswith("numpy-") and name.endswith(".dist-info")):
                shutil.copytree(src.parent / name, sp / name, symlinks=True)
    else:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--target", str(sp), "numpy"],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if proc.returncode != 0:
            pytest.skip(f"numpy is not installed and `pip install numpy` failed: {proc.stderr[-500:]}")
    # The running environment's packages (pytest, hypothesis) go after the venv's own site-packages.
    paths = [p for p in [*site.getsitepackages(), site.getusersitepackages()] if os.path.isdir(p)]
    (sp / "zz_runner_site.pth").write_text("\n".join(paths) + "\n")
    return dest / "bin" / "python"


def numpy_modules(sp: Path) -> list[Path]:
    """Every ELF file of numpy's wheel: extension modules and the bundled libraries."""
    out = []
    for root in (sp / "numpy", sp / "numpy.libs"):
        if root.is_dir():
            out += [p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink() and is_elf(p)]
    return out


def run_numpy_tests(python: Path, tests: list[str], work: Path) -> tuple[int | None, dict[str, str], str]:
    work.mkdir(parents=True, exist_ok=True)
    junit = work / "junit.xml"
    sp = _site_packages(python.parent.parent)
    cmd = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", "-o", "addopts="]
    cmd += [f"--junitxml={junit}", "--ignore", str(sp / "numpy" / "f2py"), "--pyargs"]
    cmd += ["numpy"] if tests == ["all"] else [f"numpy.{t}" for t in tests]
    try:
        proc = subprocess.run(
            cmd,
            cwd=work,
            env=clean_env({"PYTHONHASHSEED": "0"}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=4 * 3600,
        )
        rc, output = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as e:
        rc, output = (
            None,
            (e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout or ""),
        )
    (work / "pytest.log").write_text(output)
    cases: dict[str, str] = {}
    if junit.exists() and junit.stat().st_size:
        for tc in ET.parse(junit).getroot().iter("testcase"):
            name = f"{tc.get('classname')}::{tc.get('name')}"
            outcome = "pass"
            for child in tc:
                if child.tag in ("skipped", "failure", "error"):
                    outcome = child.tag
            cases[name] = outcome
    return rc, cases, output


def test_numpy_hardened(tmp_path: Path) -> None:
    if importlib.util.find_spec("pytest") is None or importlib.util.find_spec("hypothesis") is None:
        pytest.skip("pytest and hypothesis must be installed in the running environment")
    work = out_dir(tmp_path) / "numpy"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    python = make_venv(work / "venv")
    sp = _site_packages(work / "venv")
    check = subprocess.run([str(python), "-c", PY_SNIPPET], env=clean_env(), capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert check.stdout.splitlines()[0].startswith(str(sp)), (
        f"numpy not imported from the copy: {check.stdout}"
    )
    tests = os.environ.get("CFIGUARD_NUMPY_TESTS", ",".join(DEFAULT_TESTS)).split(",")

    base_rc, base, base_out = run_numpy_tests(python, tests, work / "unhardened")
    assert base, f"the unhardened run produced no test results:\n{base_out[-3000:]}"

    # Harden every ELF file of the wheel in place (inside the copy only).
    modules = numpy_modules(sp)
    reports = work / "reports"
    reports.mkdir()

    def one(p: Path):
        tmp = p.with_name(p.name + ".cfi")
        h = harden(p, tmp, reports / (p.name + ".json"))
        if h.status == "ok":
            os.replace(tmp, p)
            assert b"CFIGUARD" in p.read_bytes(), f"{p} has no .cfiguard manifest after hardening"
        return p, h

    with ThreadPoolExecutor(jobs()) as pool:
        results = list(pool.map(one, modules))
    cov = Coverage()
    per_module = {}
    for p, h in results:
        per_module[str(p.relative_to(sp))] = {"status": h.status, "counts": h.counts, "error": h.error_line}
        if h.report:
            cov.add(p.name, h.report)
    bad = {m: r for m, r in per_module.items() if r["status"] != "ok"}

    hcheck = subprocess.run([str(python), "-c", PY_SNIPPET], env=clean_env(), capture_output=True, text=True)
    hard_rc, hard, hard_out = run_numpy_tests(python, tests, work / "hardened")
    changed = sorted(n for n in set(base) | set(hard) if base.get(n) != hard.get(n))
    summary = {
        "tests": tests,
        "modules": per_module,
        "coverage": cov.as_dict(),
        "snippet": {"unhardened": check.stdout, "hardened": hcheck.stdout, "hardened_stderr": hcheck.stderr},
        "unhardened": {"rc": base_rc, "cases": dict(Counter(base.values()))},
        "hardened": {"rc": hard_rc, "cases": dict(Counter(hard.values()))},
        "changed": {n: [base.get(n, "absent"), hard.get(n, "absent")] for n in changed},
    }
    write_json(work / "summary.json", summary)
    assert not bad, f"numpy modules not hardened: {bad}"
    assert (hcheck.returncode, hcheck.stdout) == (check.returncode, check.stdout), hcheck.stderr[-3000:]
    assert (hard_rc, not changed) == (base_rc, True), (
        f"hardened numpy: exit {hard_rc} (unhardened {base_rc}); {len(changed)} test cases differ, e.g.\n"
        + "\n".join(f"  {n}: {base.get(n, 'absent')} -> {hard.get(n, 'absent')}" for n in changed[:30])
        + f"\n--- hardened run (log in {work}) ---\n{hard_out[-3000:]}"
    )
