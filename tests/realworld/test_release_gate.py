"""The release gate on stock system files (runs in CI): every output verifies, with 0 unguarded sites.

`cfiguard harden` checks its own output with the independent verifier and writes nothing that fails it; this
test runs harden, then `cfiguard verify` again as a separate process (the gate a release pipeline runs), and a
functional check of each program against the original. The full sweep over /usr/bin, /usr/sbin and
/usr/lib/x86_64-linux-gnu is opt-in (docs/realworld.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIB = Path("/usr/lib/x86_64-linux-gnu")
PROGRAMS = ["/bin/ls", "/usr/bin/xz", "/usr/bin/git", "/usr/bin/sqlite3", "/usr/bin/python3.11"]
# Libraries, each with the Debian python3.11 module that loads it.
LIBRARIES = {
    "libz.so.1": "import zlib; d = bytes(range(256)) * 400; assert zlib.decompress(zlib.compress(d, 9)) == d; print(zlib.crc32(zlib.compress(d)))",
    "libexpat.so.1": "import xml.etree.ElementTree as E; r = E.fromstring('<a x=\"1\"><b>t</b><b/></a>'); print(len(r), r.attrib, r[0].text)",
    "liblzma.so.5": "import lzma; d = b'cfiguard' * 5000; assert lzma.decompress(lzma.compress(d)) == d; print(len(lzma.compress(d)))",
    "libsqlite3.so.0": "import sqlite3; c = sqlite3.connect(':memory:'); c.execute('create table t(a, b)'); c.executemany('insert into t values (?, ?)', [(i, str(i)) for i in range(2000)]); print(c.execute('select sum(a), max(b), count(distinct b % 7) from t').fetchone())",
}


def cfiguard(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "cfiguard.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


def gate(src: str, out: Path) -> dict:
    report = out.with_suffix(".json")
    proc = cfiguard("harden", src, "-o", str(out), "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(report.read_text())
    assert doc["verification"]["verified"] is True
    unguarded = [s for s in doc["sites"] if s["outcome"] == "unguarded"]
    assert not unguarded, unguarded[:5]
    proc = cfiguard("verify", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:]
    return doc


def same(a: list[str], b: list[str], env: dict | None = None, env_b: dict | None = None) -> None:
    """The original command `a` and the hardened `b` (with `env_b` if given) give the same result."""
    x = subprocess.run(a, capture_output=True, timeout=120, env=env)
    y = subprocess.run(b, capture_output=True, timeout=120, env=env_b or env)
    assert (y.returncode, y.stdout) == (x.returncode, x.stdout), y.stderr[-2000:]
    assert b"CFI violation" not in y.stderr


@pytest.mark.parametrize("src", PROGRAMS, ids=[Path(p).name for p in PROGRAMS])
def test_program(src: str, tmp_path: Path) -> None:
    if not os.path.exists(src):
        pytest.skip(f"{src} is not installed on this machine")
    out = tmp_path / (Path(src).name + ".cfi")
    gate(src, out)
    name = Path(src).name
    if name == "ls":
        same(
            [src, "-lR", "--time-style=full-iso", "/usr/share/doc/dpkg"],
            [str(out), "-lR", "--time-style=full-iso", "/usr/share/doc/dpkg"],
        )
    elif name == "xz":
        data = tmp_path / "data"
        data.write_bytes(b"".join(Path(p).read_bytes() for p in PROGRAMS if os.path.exists(p))[:3_000_000])
        same([src, "-9", "-c", str(data)], [str(out), "-9", "-c", str(data)])
        packed = tmp_path / "data.xz"
        packed.write_bytes(subprocess.run([src, "-c", str(data)], capture_output=True, check=True).stdout)
        same([src, "-dc", str(packed)], [str(out), "-dc", str(packed)])
    elif name == "git":
        env = dict(
            os.environ, GIT_AUTHOR_DATE="2026-01-01T00:00:00Z", GIT_COMMITTER_DATE="2026-01-01T00:00:00Z"
        )
        env |= {
            "GIT_AUTHOR_NAME": "a",
            "GIT_AUTHOR_EMAIL": "a@b",
            "GIT_COMMITTER_NAME": "a",
            "GIT_COMMITTER_EMAIL": "a@b",
        }
        env |= {"HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1"}
        for exe in (src, str(out)):
            repo = tmp_path / ("repo-" + Path(exe).name)
            shutil.copytree(
                REPO / "cfiguard", repo / "cfiguard", ignore=shutil.ignore_patterns("__pycache__")
            )
            for cmd in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "one"]):
                subprocess.run([exe, *cmd], cwd=repo, env=env, check=True, capture_output=True)
        for cmd in (["log", "--stat", "--format=%H %s"], ["grep", "-c", "def "], ["diff", "HEAD", "--stat"]):
            same(
                [src, "-C", str(tmp_path / "repo-git"), *cmd],
                [str(out), "-C", str(tmp_path / "repo-git.cfi"), *cmd],
                env=env,
            )
    elif name == "sqlite3":
        sql = "create table t(a, b); with recursive c(x) as (select 1 union all select x + 1 from c where x < 5000) insert into t select x, x * x % 97 from c; select b, count(*), sum(a) from t group by b order by 2 desc, 1 limit 5; select json_object('n', count(*)) from t;"
        same([src, ":memory:", sql], [str(out), ":memory:", sql])
    else:
        check = "import json, re, hashlib; print(json.dumps(re.findall(r'(\\w+)=(\\d+)', 'a=1 b=22')), hashlib.sha1(b'x').hexdigest())"
        same([src, "-c", check], [str(out), "-c", check])


@pytest.mark.parametrize("lib", sorted(LIBRARIES))
def test_library(lib: str, tmp_path: Path) -> None:
    py = "/usr/bin/python3.11"
    if not (LIB / lib).exists() or not os.path.exists(py):
        pytest.skip(f"{LIB / lib} or {py} is not installed on this machine")
    libdir = tmp_path / "lib"
    libdir.mkdir()
    gate(str(LIB / lib), libdir / lib)
    env = dict(os.environ, LD_LIBRARY_PATH=str(libdir))
    same([py, "-c", LIBRARIES[lib]], [py, "-c", LIBRARIES[lib]], env_b=env)
    # The hardened copy is the one that was loaded.
    maps = subprocess.run(
        [py, "-c", LIBRARIES[lib] + "\nprint(open('/proc/self/maps').read())"],
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    assert str(libdir / lib) in maps
