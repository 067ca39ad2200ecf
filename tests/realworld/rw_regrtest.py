"""Run CPython's own regression suite (`python -m test`) and compare two runs test file by test file and
test case by test case (from regrtest's --junit-xml)."""

from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Quick tests for the fast (CI) part: a few seconds each, a lot of C code behind them.
QUICK_TESTS = ["test_json", "test_re", "test_bool"]

# The long subset: a few minutes on 2 cores; exercises the interpreter loop, the object model, the parser and
# compiler, and the C accelerators (_json, _sre, _decimal, _pickle, _ctypes, _sqlite3, zlib, hashlib, ...).
LONG_TESTS = [
    "test_array", "test_ast", "test_augassign", "test_base64", "test_binascii", "test_bisect", "test_bool",
    "test_buffer", "test_builtin", "test_bytes", "test_bz2", "test_class", "test_cmath", "test_codecs",
    "test_collections", "test_compile", "test_complex", "test_contextlib", "test_copy", "test_coroutines",
    "test_csv", "test_ctypes", "test_dataclasses", "test_datetime", "test_decimal", "test_defaultdict",
    "test_deque", "test_descr", "test_dict", "test_difflib", "test_dis", "test_enum", "test_exception_group",
    "test_exceptions", "test_except_star", "test_float", "test_format", "test_fractions", "test_frame",
    "test_fstring", "test_functools", "test_gc", "test_generators", "test_genexps", "test_grammar",
    "test_gzip", "test_hashlib", "test_heapq", "test_hmac", "test_import", "test_inspect", "test_int",
    "test_io", "test_ipaddress", "test_iter", "test_itertools", "test_json", "test_list", "test_listcomps",
    "test_long", "test_lzma", "test_marshal", "test_math", "test_memoryview", "test_operator",
    "test_ordered_dict", "test_os", "test_patma", "test_pickle", "test_pprint", "test_property",
    "test_random", "test_range", "test_re", "test_scope", "test_set", "test_slice", "test_sort",
    "test_sqlite3", "test_statistics", "test_string", "test_string_literals", "test_struct", "test_super",
    "test_syntax", "test_sys", "test_sys_settrace", "test_tarfile", "test_textwrap", "test_threading",
    "test_tokenize", "test_traceback", "test_tuple", "test_typing", "test_unicode", "test_unicodedata",
    "test_unpack", "test_weakref", "test_with", "test_xml_etree", "test_xml_etree_c", "test_zipfile",
    "test_zlib",
]  # fmt: skip

_FILE_LINE = re.compile(r"\[\s*\d+/\d+(?:/\d+)?\]\s+(test_[\w.]+)\s+(.*)$")


def available_tests(testdir: Path, wanted: list[str]) -> tuple[list[str], list[str]]:
    """(present, missing) among `wanted`, as modules or packages of the Lib/test directory `testdir`."""
    present = [t for t in wanted if (testdir / f"{t}.py").exists() or (testdir / t / "__init__.py").exists()]
    return present, [t for t in wanted if t not in present]


def file_status(text: str) -> str:
    """regrtest's per-file outcome from the rest of its progress line ('passed', 'failed (2 failures)',
    'skipped -- why', 'crashed (Exit code -11)', 'failed (env changed)', ...), without timings."""
    text = text.split(" -- ")[0].strip()
    text = re.sub(r"\s*\(\d+(?:\.\d+)? (?:sec|ms)\)", "", text)
    text = re.sub(r"\s*\d+ min \d+ sec", "", text)
    word = text.split(" ", 1)[0] if text else "?"
    if "env changed" in text:
        return "env changed"
    if word in ("skipped", "resource"):
        return "skipped"
    return word


@dataclass
class RegrRun:
    rc: int | None
    files: dict[str, str]  # test file -> passed / failed / skipped / crashed / ...
    cases: dict[str, str]  # test case -> pass / skipped / failure / error
    output: str
    tests: list[str] = field(default_factory=list)

    def case_counts(self) -> Counter:
        return Counter(self.cases.values())

    def summary(self) -> str:
        return f"exit {self.rc}; files {dict(Counter(self.files.values()))}; cases {dict(self.case_counts())}"


def parse_junit(path: Path) -> dict[str, str]:
    if not path.exists() or path.stat().st_size == 0:
        return {}
    cases: dict[str, str] = {}
    for tc in ET.parse(path).getroot().iter("testcase"):
        name = tc.get("name") or "?"
        if tc.get("classname"):
            name = f"{tc.get('classname')}::{name}"
        outcome = "pass"
        for child in tc:
            if child.tag in ("skipped", "failure", "error"):
                outcome = child.tag
        cases[name] = outcome
    return cases


def run_regrtest(
    python: str,
    tests: list[str],
    workdir: Path,
    env: Mapping[str, str],
    jobs: int = 2,
    per_test_timeout: int = 900,
    timeout: float = 7200,
) -> RegrRun:
    """`python -m test -jN TESTS` in `workdir` (its own temp dir, JUnit XML and log)."""
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    junit = workdir / "junit.xml"
    cmd = [python, "-m", "test", f"-j{jobs}", "--timeout", str(per_test_timeout)]
    cmd += ["--junit-xml", str(junit), "--tempdir", str(tmp), *tests]
    try:
        proc = subprocess.run(
            cmd,
            cwd=workdir,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=timeout,
        )
        rc, output = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as e:
        out = e.stdout or b""
        rc, output = None, (out.decode(errors="replace") if isinstance(out, bytes) else out)
    (workdir / "regrtest.log").write_text(output)
    files: dict[str, str] = {}
    for line in output.splitlines():
        m = _FILE_LINE.search(line)
        if m:  # a test package may report as test_x.test_y: keep the worst outcome under test_x
            name, status = m.group(1).split(".")[0], file_status(m.group(2))
            if files.get(name, "passed") == "passed":
                files[name] = status
    for t in tests:  # a test with no progress line (the whole run died): say so
        files.setdefault(t, "no result")
    return RegrRun(rc, files, parse_junit(junit), output, list(tests))


def compare_runs(base: RegrRun, hard: RegrRun, limit: int = 40) -> list[str]:
    """Differences between an unhardened and a hardened run (empty: same results)."""
    diffs = []
    if base.rc != hard.rc:
        diffs.append(f"exit code: unhardened {base.rc}, hardened {hard.rc}")
    for t in sorted(set(base.files) | set(hard.files)):
        a, b = base.files.get(t, "absent"), hard.files.get(t, "absent")
        if a != b:
            diffs.append(f"{t}: unhardened {a}, hardened {b}")
    if base.case_counts() != hard.case_counts():
        diffs.append(
            f"case counts: unhardened {dict(base.case_counts())}, hardened {dict(hard.case_counts())}"
        )
    changed = [n for n in sorted(set(base.cases) | set(hard.cases)) if base.cases.get(n) != hard.cases.get(n)]
    for n in changed[:limit]:
        diffs.append(
            f"  {n}: unhardened {base.cases.get(n, 'absent')}, hardened {hard.cases.get(n, 'absent')}"
        )
    if len(changed) > limit:
        diffs.append(f"  ... {len(changed) - limit} more test cases differ")
    return diffs


def failure_excerpt(run: RegrRun, lines: int = 60) -> str:
    """The tail of a regrtest log: what to look at when the runs differ."""
    return "\n".join(run.output.splitlines()[-lines:])


def proc_maps(python: str, env: Mapping[str, str]) -> str:
    """/proc/self/maps of `python -c` run with `env` (to see which libpython it really loads)."""
    code = "import sys; sys.stdout.write(open('/proc/self/maps').read())"
    return subprocess.run(
        [python, "-c", code], env=dict(env), capture_output=True, text=True, check=True, timeout=120
    ).stdout


def exe_of(python: str, env: Mapping[str, str]) -> str:
    code = "import os; print(os.readlink('/proc/self/exe'))"
    out = subprocess.run([python, "-c", code], env=dict(env), capture_output=True, text=True, timeout=120)
    return out.stdout.strip() or f"(failed: {out.stderr.strip()[-200:]})"


def differing_files(base: RegrRun, hard: RegrRun) -> list[str]:
    """Test files whose outcome, or the outcome of one of whose cases, differs between two runs."""
    out = {t for t in set(base.files) | set(hard.files) if base.files.get(t) != hard.files.get(t)}
    for n in set(base.cases) | set(hard.cases):
        if base.cases.get(n) != hard.cases.get(n):
            parts = n.split("::")[-1].split(".")
            if len(parts) > 1 and parts[0] == "test":
                out.add(parts[1])
    return sorted(out)


def compare_confirmed(
    base: RegrRun,
    hard: RegrRun,
    rerun: Callable[[list[str], str], RegrRun],
) -> tuple[list[str], list[str]]:
    """(differences, flaky): a difference counts only if it shows again when the test files concerned run once
    more in both configurations (`rerun(files, "unhardened" | "hardened")`); the others are reported as flaky.
    """
    first = compare_runs(base, hard)
    if not first:
        return [], []
    files = differing_files(base, hard)
    if not files:
        return first, []
    base2, hard2 = rerun(files, "unhardened"), rerun(files, "hardened")
    second = compare_runs(base2, hard2)
    return second, [] if second else first
