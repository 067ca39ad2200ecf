"""`cfiguard wheel`: hardened wheels stay installable and work.

A wheel built here (a ctypes-loaded shared library with function-pointer tables and a Python callback, and
an ELF executable under .data/scripts/) checks RECORD, member order and metadata, refusals and
--skip-unhardenable offline. A real wheel from PyPI, msgpack (a Cython extension module), downloaded at test
time, is hardened, installed into a fresh venv and run against msgpack's own test suite from its sdist.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import stat
import struct
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from integ_support import OFFLINE, SAMPLES, info, need, reference_output, run

MSGPACK = "1.1.0"  # pinned: its wheels cover CPython 3.8-3.13 on manylinux x86-64

LIB_C = r"""
#include <stdlib.h>
typedef long (*op_t)(long, long);
static long add(long a, long b) { return a + b; }
static long sub(long a, long b) { return a - b; }
static long mul(long a, long b) { return a * b; }
static op_t OPS[] = {add, sub, mul};
long demo_compute(int which, long a, long b) { return OPS[which % 3](a, b); }
static int cmp(const void *x, const void *y) { int a = *(const int *)x, b = *(const int *)y; return (a > b) - (a < b); }
long demo_sort_weigh(int *v, int n, long (*weight)(int)) {
    qsort(v, (size_t)n, sizeof *v, cmp);
    long s = 0;
    for (int i = 0; i < n; i++) s = s * 31 + weight(v[i]);
    return s;
}
"""

INIT_PY = r"""
import ctypes, os
_lib = ctypes.CDLL(os.path.join(os.path.dirname(__file__), os.pardir, "demo.libs", "libdemo.so"))
_lib.demo_compute.restype = ctypes.c_long
_lib.demo_compute.argtypes = [ctypes.c_int, ctypes.c_long, ctypes.c_long]
WEIGHT = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_int)
_lib.demo_sort_weigh.restype = ctypes.c_long
_lib.demo_sort_weigh.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_int, WEIGHT]

def report():
    v = (ctypes.c_int * 7)(5, -3, 9, 0, 12, 7, -8)
    w = _lib.demo_sort_weigh(v, 7, WEIGHT(lambda x: x * x + 1))  # libc -> library -> Python callback
    return [_lib.demo_compute(k, 1000 + k, 7) for k in range(6)], list(v), w
"""


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(d: Path, extra: dict[str, bytes] | None = None) -> Path:
    """A platform wheel `demo` with a shared library, an executable script and Python code."""
    src = SAMPLES / "cmake"
    (d / "lib.c").write_text(LIB_C)
    run(["gcc", "-O2", "-fPIC", "-shared", "-o", d / "libdemo.so", d / "lib.c"])
    run(["gcc", "-O2", "-o", d / "demo-shapes", src / "main.c", src / "shapes.c", f"-I{src}"])
    files = {
        "demo/__init__.py": INIT_PY.encode(),
        "demo.libs/libdemo.so": (d / "libdemo.so").read_bytes(),
        "demo-1.0.data/scripts/demo-shapes": (d / "demo-shapes").read_bytes(),
        **(extra or {}),
        "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
        "demo-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: cfiguard-tests\nRoot-Is-Purelib: false\n"
            b"Tag: py3-none-linux_x86_64\n"
        ),
    }
    rows = [[name, record_hash(data), str(len(data))] for name, data in files.items()]
    rows.append(["demo-1.0.dist-info/RECORD", "", ""])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    files["demo-1.0.dist-info/RECORD"] = buf.getvalue().encode()
    whl = d / "demo-1.0-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            zi = zipfile.ZipInfo(name, date_time=(2020, 2, 2, 0, 0, 0))
            zi.external_attr = (stat.S_IFREG | (0o755 if data.startswith(b"\x7fELF") else 0o644)) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
    return whl


def check_record(whl: Path) -> dict[str, bytes]:
    """Every member listed in RECORD with the right hash and size, and nothing else; returns the members."""
    with zipfile.ZipFile(whl) as z:
        members = {i.filename: z.read(i) for i in z.infolist() if not i.is_dir()}
    (record_name,) = [n for n in members if n.endswith(".dist-info/RECORD")]
    rows = list(csv.reader(io.StringIO(members[record_name].decode())))
    listed = {r[0]: r for r in rows if r}
    assert set(listed) == set(members), set(listed) ^ set(members)
    for name, data in members.items():
        if name == record_name:
            continue
        assert listed[name][1:] == [record_hash(data), str(len(data))], name
    return members


def fresh_venv(d: Path) -> Path:
    run([sys.executable, "-m", "venv", d])
    return d / "bin" / "python"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need("gcc")
    return make_wheel(tmp_path_factory.mktemp("demo-wheel"))


def test_wheel_hardened_and_installable(demo: Path, cfiguard_exe: Path, tmp_path: Path) -> None:
    out = tmp_path / "wheelhouse"
    out.mkdir()
    p = run([cfiguard_exe, "wheel", demo, "-o", out])
    assert "2 file(s) hardened" in p.stderr and "demo.libs/libdemo.so" in p.stderr
    hard = out / demo.name
    before, after = check_record(demo), check_record(hard)
    with zipfile.ZipFile(demo) as a, zipfile.ZipFile(hard) as b:
        assert [i.filename for i in a.infolist()] == [i.filename for i in b.infolist()]
        for x, y in zip(a.infolist(), b.infolist(), strict=True):
            assert (x.date_time, x.external_attr) == (y.date_time, y.external_attr), x.filename
    for name in before:
        elf = before[name].startswith(b"\x7fELF")
        assert (before[name] != after[name]) == (elf or name.endswith("RECORD")), name
    for name in ("demo.libs/libdemo.so", "demo-1.0.data/scripts/demo-shapes"):
        f = tmp_path / Path(name).name
        f.write_bytes(after[name])
        (rec,) = info(cfiguard_exe, f)
        assert rec["status"] == "hardened" and rec["coverage"]["unguarded"] == 0
        assert run([cfiguard_exe, "verify", f], check=False).returncode == 0

    # pip installs it, and the hardened code runs: library, callback and script.
    orig = tmp_path / "orig"
    with zipfile.ZipFile(demo) as z:
        z.extractall(orig)
    expected = run([sys.executable, "-c", "import demo; print(demo.report())"], cwd=orig).stdout
    py = fresh_venv(tmp_path / "venv")
    run([py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", hard])
    got = run([py, "-c", "import demo; print(demo.report())"], cwd=tmp_path)
    assert got.stdout == expected
    loaded = run([py, "-c", "import demo; print(demo._lib._name)"], cwd=tmp_path).stdout.strip()
    assert "site-packages" in loaded
    (rec,) = info(cfiguard_exe, Path(loaded))
    assert rec["status"] == "hardened"  # what pip installed is the hardened library
    script = tmp_path / "venv" / "bin" / "demo-shapes"
    assert info(cfiguard_exe, script)[0]["status"] == "hardened"
    assert run([script]).stdout == reference_output(tmp_path)


def foreign(elf: bytes) -> bytes:
    """The same library marked as an aarch64 file: cfiguard cannot harden it."""
    b = bytearray(elf)
    struct.pack_into("<H", b, 18, 183)
    return bytes(b)


def test_unhardenable_member_fails_unless_skipped(tmp_path: Path, cfiguard_exe: Path) -> None:
    need("gcc")
    d = tmp_path / "src"
    d.mkdir()
    make_wheel(d)
    lib = (d / "libdemo.so").read_bytes()
    whl = make_wheel(d, {"demo/foreign.so": foreign(lib)})
    out = tmp_path / "out"
    out.mkdir()
    p = run([cfiguard_exe, "wheel", whl, "-o", out], check=False)
    assert p.returncode == 1, p.stderr
    assert "demo/foreign.so: not an x86-64 ELF" in p.stderr and "nothing written" in p.stderr
    assert not list(out.iterdir())

    p = run([cfiguard_exe, "wheel", whl, "-o", out, "--skip-unhardenable"])
    assert "warning:" in p.stderr and "demo/foreign.so" in p.stderr and "1 kept unhardened" in p.stderr
    members = check_record(out / whl.name)
    assert members["demo/foreign.so"] == foreign(lib)  # kept byte for byte
    assert members["demo.libs/libdemo.so"] != lib


def test_hardened_wheel_again_is_kept(demo: Path, tmp_path: Path, cfiguard_exe: Path) -> None:
    once, twice = tmp_path / "once", tmp_path / "twice"
    once.mkdir()
    twice.mkdir()
    run([cfiguard_exe, "wheel", demo, "-o", once])
    p = run([cfiguard_exe, "wheel", once / demo.name, "-o", twice])
    assert p.stderr.count("already hardened by cfiguard; kept") == 2
    assert (once / demo.name).read_bytes() == (twice / demo.name).read_bytes()


def test_wheel_unusable_inputs(demo: Path, tmp_path: Path, cfiguard_exe: Path) -> None:
    junk = tmp_path / "junk-1.0-py3-none-any.whl"
    junk.write_bytes(b"not a zip")
    out = tmp_path / "out"
    out.mkdir()
    cases = [
        ([junk, "-o", out], "not a zip archive"),
        ([demo, "-o", tmp_path / "missing"], "does not exist"),
        ([demo, "-o", demo.parent], "overwrite the input"),
        ([tmp_path / "nope.whl", "-o", out], "No such file"),
        ([demo.parent / "lib.c", "-o", out], "not a wheel"),
    ]
    for args, message in cases:
        p = run([cfiguard_exe, "wheel", *args], check=False)
        assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)
    assert not list(out.iterdir())


def _pip_download(dest: Path, *args: str) -> None:
    p = run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--retries",
            "1",
            "--timeout",
            "20",
            "-q",
            "-d",
            dest,
            *args,
        ],
        check=False,
    )
    if p.returncode != 0:
        if OFFLINE.search(p.stderr):
            pytest.skip(f"PyPI is not reachable: {p.stderr.strip()[-300:]}")
        raise AssertionError(p.stderr)


def test_msgpack_wheel_from_pypi_passes_its_own_tests(tmp_path: Path, cfiguard_exe: Path) -> None:
    import pytest as outer_pytest

    dl = tmp_path / "dl"
    _pip_download(dl, f"msgpack=={MSGPACK}", "--only-binary=:all:")
    (whl,) = dl.glob("msgpack-*.whl")
    _pip_download(dl, f"msgpack=={MSGPACK}", "--no-binary=:all:")
    (sdist,) = dl.glob("msgpack-*.tar.gz")

    out = tmp_path / "wheelhouse"
    out.mkdir()
    p = run([cfiguard_exe, "wheel", whl, "-o", out])
    assert "_cmsgpack" in p.stderr and "1 file(s) hardened" in p.stderr
    check_record(out / whl.name)

    tests = tmp_path / "suite"
    with tarfile.open(sdist) as t:
        members = [m for m in t.getmembers() if m.name.startswith(f"msgpack-{MSGPACK}/test/") and m.isfile()]
        assert len(members) > 10
        for m in members:
            data = t.extractfile(m).read()
            dst = tests / Path(m.name).name
            dst.parent.mkdir(exist_ok=True)
            dst.write_bytes(data)

    py = fresh_venv(tmp_path / "venv")
    run([py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", out / whl.name])
    p = run(
        [
            py,
            "-m",
            "pip",
            "install",
            "-q",
            "--retries",
            "1",
            "--timeout",
            "20",
            f"pytest=={outer_pytest.__version__}",
        ],
        check=False,
    )
    if p.returncode != 0 and OFFLINE.search(p.stderr):
        pytest.skip(f"PyPI is not reachable for pytest: {p.stderr.strip()[-300:]}")
    assert p.returncode == 0, p.stderr
    # The C extension is the one in use (msgpack falls back to pure Python if it fails to import).
    probe = run(
        [
            py,
            "-c",
            "import msgpack, msgpack._cmsgpack as c; "
            "assert msgpack.Packer is c.Packer and msgpack.Unpacker is c.Unpacker; print(c.__file__)",
        ],
        cwd=tmp_path,
    )
    ext = Path(probe.stdout.strip())
    (rec,) = info(cfiguard_exe, ext)
    assert rec["status"] == "hardened" and rec["coverage"]["unguarded"] == 0, rec
    assert run([cfiguard_exe, "verify", ext], check=False).returncode == 0
    suite = run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", tests], cwd=tmp_path, check=False)
    assert suite.returncode == 0, suite.stdout[-3000:]
    last = suite.stdout.strip().splitlines()[-1]
    assert " passed" in last and "failed" not in last and "error" not in last, last
    assert int(last.split(" passed")[0].split()[-1]) >= 100, last  # the whole suite ran
