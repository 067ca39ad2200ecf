"""The shared-library sweep: harden every ELF file matching /usr/lib/x86_64-linux-gnu/*.so*, re-check the
output with `cfiguard verify`, then check that the hardened copy works in a fresh process.

Classification as in rw_sweep.py (`identical` is the gate's pass: harden exit 0, verify exit 0, 0 unguarded
sites, every functional check the same as with the original library). The functional checks of a library, all
run with the hardened copy first in `LD_LIBRARY_PATH` (it is put in a fresh directory under its SONAME and
its file name) and compared with the same command on the original (exit code, stdout, stderr):

  load      `python3.11 -c 'ctypes.CDLL(SONAME)'` loads it (a library that does not load in the original
            either, e.g. one that needs symbols of its main program, must fail the same way); the hardened
            copy must then be the one mapped (/proc/self/maps)
  python    a small workload of the Debian python3.11 module that uses it (zlib, sqlite3, ssl, hashlib,
            ctypes, curses, decimal, ...: PY_WORKLOADS), where there is one
  program   a /usr/bin program that links it (directly, else through another library; ldd): its functional
            invocation from rw_sweep.FUNCTIONAL if it has one, else `--version`/`--help`; the hardened copy
            must be in the program's resolved libraries (LD_TRACE_LOADED_OBJECTS)

The dynamic loader itself (ld-linux-x86-64.so.2) is checked by running python3.11 through the hardened loader
(`HARDENED /usr/bin/python3.11 -c ...`).

Standalone: python tests/realworld/rw_libs.py --out DIR [--jobs N] [--only libz.so.1,libffi.so.8]
            [--max-size MB] [--sample N]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rw_support import harden, is_elf, jobs, write_json  # noqa: E402
from rw_sweep import (  # noqa: E402
    FUNCTIONAL,
    Run,
    _decode,
    _fresh,
    first_difference,
    gate_row,
    keep,
    make_data,
    program_env,
    run_captured,
    summarize,
)

LIBDIR = "/usr/lib/x86_64-linux-gnu"
PYTHON = "/usr/bin/python3.11"  # Debian's, linked against the system's libraries
PROGRAM_DIRS = ("/usr/bin",)
LOADER = "ld-linux-x86-64.so.2"

# Workloads of Debian python3.11 modules, by SONAME of the library they go through.
PY_WORKLOADS: dict[str, str] = {
    "libc.so.6": "import json, re, os, locale, subprocess; print(json.dumps(re.findall(r'\\d+', 'a1b22c333'))); "
    "print(sorted(os.listdir('/usr/share/doc/dpkg'))[:3], locale.setlocale(locale.LC_ALL, 'C.UTF-8')); "
    "print(subprocess.run(['/bin/echo', 'child'], capture_output=True).stdout)",
    "libm.so.6": "import math, cmath; print(math.gamma(4.5), math.erf(0.3), math.lgamma(7.1), math.atan2(1, 2), "
    "math.fsum(math.sin(i) for i in range(1000)), cmath.sqrt(-2 + 1j), math.cbrt(27.5), math.exp2(10.5))",
    "libz.so.1": "import zlib; d = bytes(range(256)) * 400; assert zlib.decompress(zlib.compress(d, 9)) == d; "
    "print(zlib.crc32(zlib.compress(d)), zlib.adler32(d))",
    "libexpat.so.1": "import xml.etree.ElementTree as E; r = E.fromstring('<a x=\"1\"><b>t</b><b/></a>'); "
    "print(len(r), r.attrib, r[0].text); import xml.dom.minidom as M; "
    "print(M.parseString('<r><c n=\"2\"/></r>').documentElement.firstChild.getAttribute('n'))",
    "liblzma.so.5": "import lzma; d = b'cfiguard' * 5000; assert lzma.decompress(lzma.compress(d)) == d; "
    "print(len(lzma.compress(d)), len(lzma.compress(d, format=lzma.FORMAT_ALONE)))",
    "libbz2.so.1.0": "import bz2; d = b'cfiguard' * 5000 + bytes(range(256)); "
    "assert bz2.decompress(bz2.compress(d)) == d; print(len(bz2.compress(d, 9)))",
    "libsqlite3.so.0": "import sqlite3; c = sqlite3.connect(':memory:'); c.execute('create table t(a, b)'); "
    "c.executemany('insert into t values (?, ?)', [(i, str(i)) for i in range(2000)]); "
    "print(c.execute('select sum(a), max(b), count(distinct b % 7) from t').fetchone()); "
    "c.create_function('f', 1, lambda x: x * 3); print(c.execute('select f(14), json_object(\"a\", 1)').fetchone())",
    "libffi.so.8": "import ctypes, ctypes.util; libc = ctypes.CDLL(None); a = (ctypes.c_int * 8)(5, 3, 8, 1, 9, 2, 7, 4); "
    "CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)); "
    "libc.qsort(a, 8, ctypes.sizeof(ctypes.c_int), CB(lambda x, y: x[0] - y[0])); print(list(a)); "
    "print(libc.strlen(b'hello'), ctypes.c_double(2.5).value)",
    "libssl.so.3": "import ssl; c = ssl.create_default_context(); print(c.verify_mode, c.check_hostname, "
    "len(c.get_ciphers()) > 0, ssl.OPENSSL_VERSION.split()[0]); c2 = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); "
    "i, o = ssl.MemoryBIO(), ssl.MemoryBIO(); s = c.wrap_bio(i, o, server_hostname='x'); "
    "\ntry: s.do_handshake()\nexcept ssl.SSLWantReadError: print('want read', o.pending > 0)",
    "libcrypto.so.3": "import hashlib, hmac; print(hashlib.sha256(b'x' * 1000).hexdigest(), "
    "hashlib.new('sha512_256', b'y').hexdigest(), hashlib.sha3_256(b'z').hexdigest(), hashlib.md5(b'q').hexdigest()); "
    "print(hashlib.pbkdf2_hmac('sha256', b'pw', b'salt', 1000).hex(), hmac.new(b'k', b'm', 'sha384').hexdigest()[:16]); "
    "print(hashlib.scrypt(b'pw', salt=b's', n=16, r=8, p=1).hex()[:16])",
    "libuuid.so.1": "import _uuid, uuid; print(len(_uuid.generate_time_safe()[0]), uuid.uuid1().version)",
    "libncursesw.so.6": "import curses; curses.setupterm('xterm', 1); print(curses.tigetstr('cup'), "
    "curses.tigetnum('colors'), curses.tparm(curses.tigetstr('cup'), 5, 7)); import _curses_panel",
    "libtinfo.so.6": "import curses; curses.setupterm('vt100', 1); print(curses.tigetstr('el'), curses.tigetnum('cols'))",
    "libreadline.so.8": "import readline; readline.add_history('one'); readline.add_history('two'); "
    "print(readline.get_current_history_length(), readline.get_history_item(2), readline.get_completer_delims()[:5])",
    "libdb-5.3.so": "import dbm.ndbm as n; d = n.open('db', 'c'); d[b'k'] = b'v' * 100; d[b'j'] = b'w'; "
    "print(sorted(d.keys()), len(d[b'k'])); d.close()",
    "libcrypt.so.1": "import warnings; warnings.simplefilter('ignore'); import crypt; "
    "print(crypt.crypt('pw', '$6$saltsalt$'), crypt.crypt('pw', '$5$abc$'))",
    "libnsl.so.2": "import warnings; warnings.simplefilter('ignore'); import nis; print(nis.__name__)",
    "libtirpc.so.3": "import warnings; warnings.simplefilter('ignore'); import nis; print(nis.__name__)",
    "libyaml-0.so.2": "import yaml; d = yaml.load('a: [1, 2, {b: c}]\\nd: !!str 3\\n', Loader=yaml.CSafeLoader); "
    "print(d, yaml.dump(d, Dumper=yaml.CSafeDumper))",
    "libapt-pkg.so.6.0": "import apt_pkg; apt_pkg.init(); print(apt_pkg.version_compare('1.2~rc1', '1.2'), "
    "apt_pkg.upstream_version('1:2.3-4'), apt_pkg.parse_depends('a (>= 1) | b, c'))",
    "libglib-2.0.so.0": "from gi.repository import GLib; print(GLib.markup_escape_text('<a&b>'), "
    "GLib.compute_checksum_for_string(GLib.ChecksumType.SHA256, 'x', -1), GLib.uri_escape_string('a b/c', None, True))",
    "libgobject-2.0.so.0": "from gi.repository import GObject; o = GObject.Object(); print(type(o).__name__, "
    "GObject.type_name(GObject.TYPE_INT))",
    "libgirepository-1.0.so.1": "import gi; gi.require_version('GLib', '2.0'); from gi.repository import GLib; "
    "print(GLib.MAJOR_VERSION)",
    "libdbus-1.so.3": "import dbus; print(dbus.Byte(7), dbus.String('x'), dbus.Array([1, 2], signature='i').signature)",
}

# Written after the workload: the maps of the process, to check that the hardened copy was the one loaded.
_MAPS_TAIL = "\nimport os as _o\nopen(_o.environ['RW_MAPS_OUT'], 'w').write(open('/proc/self/maps').read())\n"


@dataclass
class Lib:
    name: str  # the file's own basename (libz.so.1.2.13)
    path: str  # LIBDIR/<first name>
    real: str
    size: int
    aliases: list[str] = field(default_factory=list)
    soname: str | None = None


def dynamic(path: str) -> tuple[str | None, list[str]]:
    """(DT_SONAME, DT_NEEDED) of an ELF file, from `readelf -d`."""
    try:
        out = subprocess.run(
            ["readelf", "-d", "-W", path], capture_output=True, text=True, errors="replace", timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, []
    soname, needed = None, []
    for line in out.splitlines():
        if "(SONAME)" in line and "[" in line:
            soname = line.split("[", 1)[1].rstrip("]")
        elif "(NEEDED)" in line and "[" in line:
            needed.append(line.split("[", 1)[1].rstrip("]"))
    return soname, needed


def collect_libs(libdir: str = LIBDIR) -> tuple[list[Lib], list[str]]:
    """(one Lib per distinct ELF file matching libdir/*.so*, names of the non-ELF matches: linker scripts)."""
    by_inode: dict[tuple[int, int], Lib] = {}
    non_elf = []
    for name in sorted(os.listdir(libdir)):
        if ".so" not in name or not (name.endswith(".so") or ".so." in name):
            continue
        path = os.path.join(libdir, name)
        if not os.path.isfile(path):
            continue
        if not is_elf(path):
            non_elf.append(name)
            continue
        real = os.path.realpath(path)
        st = os.stat(real)
        key = (st.st_dev, st.st_ino)
        if key not in by_inode:
            by_inode[key] = Lib(os.path.basename(real), path, real, st.st_size, [name])
        else:
            by_inode[key].aliases.append(name)
    libs = sorted(by_inode.values(), key=lambda x: x.name)
    for lib in libs:
        lib.soname = dynamic(lib.real)[0]
    return libs, non_elf


@functools.cache
def resolved_libraries(prog: str) -> frozenset[str]:
    """Real paths of the libraries the loader resolves for `prog` (LD_TRACE_LOADED_OBJECTS, i.e. ldd)."""
    return frozenset(_trace(prog, os.environ.get("PATH", ""), None).values())


def _trace(prog: str, path_env: str, ld_library_path: str | None) -> dict[str, str]:
    """NEEDED name -> resolved real path, as the loader would resolve them for `prog`."""
    env = {"LD_TRACE_LOADED_OBJECTS": "1", "PATH": path_env}
    if ld_library_path:
        env["LD_LIBRARY_PATH"] = ld_library_path
    try:
        p = subprocess.run(
            [prog],
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    out = {}
    for line in p.stdout.splitlines():
        parts = line.strip().split()
        if len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("/"):
            out[parts[0]] = os.path.realpath(parts[2])
    return out


@dataclass
class Users:
    """Which programs link which library (by the library's real path)."""

    direct: dict[str, list[str]] = field(default_factory=dict)  # program paths whose NEEDED names it
    transitive: dict[str, list[str]] = field(default_factory=dict)


def program_users(dirs: Iterable[str] = PROGRAM_DIRS) -> Users:
    """Index of /usr/bin: for every dynamically linked ELF program, the libraries it resolves."""
    from rw_sweep import collect

    users = Users()
    for d in dirs:
        items, _ = collect(d)
        for it in items:
            _, needed = dynamic(it.real)
            if not needed:
                continue
            resolved = _trace(it.path, os.environ.get("PATH", ""), None)
            for soname, real in resolved.items():
                (users.direct if soname in needed else users.transitive).setdefault(real, []).append(it.path)
    return users


def candidates(lib: Lib, users: Users) -> list[str]:
    """User programs to run, best first: those with a functional invocation, direct users before
    transitive ones, then by name."""
    direct, trans = users.direct.get(lib.real, []), users.transitive.get(lib.real, [])

    def key(p: str) -> tuple:
        return (os.path.basename(p) not in FUNCTIONAL, p not in direct, os.path.basename(p))

    return sorted(set(direct) | set(trans), key=key)


def _normalise(r: Run, hard_dir: Path) -> Run:
    """The library's directory as one token: the hardened copy's, and the original's as the loader names it
    (/lib/x86_64-linux-gnu from its cache, or /usr/lib/x86_64-linux-gnu)."""

    def norm(b: bytes) -> bytes:
        b = b.replace(str(hard_dir).encode() + b"/", b"LIBDIR/")
        for d in ("/usr/lib/x86_64-linux-gnu/", "/lib/x86_64-linux-gnu/"):
            b = b.replace(d.encode(), b"LIBDIR/")
        return b

    return Run(r.rc, norm(r.stdout), norm(r.stderr))


def compare_runs(
    kind: str, argv: list[str], d: Path, hard_dir: Path, lib: Lib, extra_hard_argv: list[str] | None = None
) -> dict:
    """Run `argv` with the original library, then with LD_LIBRARY_PATH=hard_dir (or `extra_hard_argv`
    prepended, for the loader); compare as rw_sweep.compare_program does."""
    scratch, home = d / "cwd", d / "home"

    def run(hardened: bool) -> tuple[Run, str]:
        _fresh(scratch)
        _fresh(home)
        env = program_env(home)
        maps = d / f"maps-{kind}-{int(hardened)}"
        env["RW_MAPS_OUT"] = str(maps)
        if hardened and not extra_hard_argv:
            env["LD_LIBRARY_PATH"] = str(hard_dir)
        cmd = [*(extra_hard_argv or []), *argv] if hardened else argv
        r = run_captured(cmd, scratch, env)
        text = maps.read_text() if maps.exists() else ""
        return _normalise(r, hard_dir), text

    orig, _ = run(False)
    hrun, maps = run(True)
    res: dict = {"kind": kind, "argv": argv, "rc": [orig.rc, hrun.rc], "stdout": _decode(orig.stdout, 200)}
    if maps:
        res["hardened_mapped"] = str(hard_dir) in maps
    violation = b"cfiguard: CFI violation" in hrun.stderr
    if orig.key() == hrun.key() and not violation:
        return {**res, "outcome": "identical"}
    if orig.rc is None and hrun.rc is None and not violation:
        return {**res, "outcome": "identical", "note": "timed out in both"}
    again, _ = run(False)
    nondet = again.key() != orig.key()
    if nondet and hrun.rc == orig.rc and not violation:
        return {**res, "outcome": "identical", "note": "nondeterministic output; exit codes equal"}
    import signal

    if violation:
        cause = "CFI violation"
    elif hrun.rc is not None and hrun.rc < 0:
        cause = f"killed by {signal.Signals(-hrun.rc).name}"
    elif hrun.rc is None:
        cause = "hardened timed out"
    elif hrun.rc != orig.rc:
        cause = "exit code differs"
    else:
        cause = "output differs"
    detail = {
        "stdout": first_difference(orig.stdout, hrun.stdout) if orig.stdout != hrun.stdout else "same",
        "stderr": first_difference(orig.stderr, hrun.stderr) if orig.stderr != hrun.stderr else "same",
        "original_stderr": _decode(orig.stderr),
        "hardened_stderr": _decode(hrun.stderr),
        "nondeterministic": nondet,
    }
    return {**res, "outcome": "failed", "cause": f"{kind}: {cause}", "detail": detail}


def functional_checks(lib: Lib, hard_dir: Path, d: Path, data: Path, users: Users) -> list[dict]:
    hard = hard_dir / lib.name
    checks = []
    if lib.soname == LOADER or lib.name.startswith("ld-linux-x86-64"):
        code = PY_WORKLOADS["libc.so.6"] + _MAPS_TAIL
        checks.append(compare_runs("loader", [PYTHON, "-c", code], d, hard_dir, lib, [str(hard)]))
        return checks
    # Load it by its SONAME where the system has a file of that name (then the loader finds the hardened copy
    # first in LD_LIBRARY_PATH), else by a name it has in LIBDIR.
    libdir = os.path.dirname(lib.path)
    target = lib.soname if lib.soname and os.path.exists(os.path.join(libdir, lib.soname)) else lib.aliases[0]
    load = (
        "import ctypes, sys\ntry:\n    ctypes.CDLL(sys.argv[1])\n    print('loaded')\n"
        "except OSError as e:\n    print('OSError', e)\n" + _MAPS_TAIL
    )
    c = compare_runs("load", [PYTHON, "-c", load, target], d, hard_dir, lib)
    c["loads_in_original"] = c["stdout"].startswith("loaded")
    checks.append(c)
    if lib.soname in PY_WORKLOADS:
        checks.append(
            compare_runs("python", [PYTHON, "-c", PY_WORKLOADS[lib.soname] + _MAPS_TAIL], d, hard_dir, lib)
        )
    for prog in candidates(lib, users)[:4]:
        name = os.path.basename(prog)
        resolved = _trace(prog, os.environ.get("PATH", ""), str(hard_dir))
        if os.path.realpath(str(hard)) not in resolved.values():
            continue  # RPATH or a library of its own wins over LD_LIBRARY_PATH
        if name in FUNCTIONAL:
            arg_lists = [[a.replace("{data}", str(data)) for a in FUNCTIONAL[name]]]
        else:
            arg_lists = [["--version"], ["--help"]]
        for args in arg_lists:
            c = compare_runs("program", [prog, *args], d, hard_dir, lib)
            if c["rc"][0] == 0 or args is arg_lists[-1]:
                break
        c["hardened_mapped"] = True  # from the trace above
        checks.append(c)
        if c["rc"][0] == 0:
            break  # one program that works in the original is enough
        checks.pop()  # its invocation fails in the original: try the next user
    return checks


def process_lib(lib: Lib, work: Path, data: Path, users: Users, keep_failures: Path | None) -> dict:
    d = work / "items" / lib.name
    _fresh(d)
    hard_dir = d / "lib"
    hard_dir.mkdir()
    hard = hard_dir / lib.name
    h = harden(lib.real, hard, d / "report.json")
    row = gate_row(lib.name, lib.real, h, hard)
    row.update(size=lib.size, aliases=lib.aliases, soname=lib.soname)
    if h.rc == 0 and row.get("outcome") != "failed":
        for alias in {lib.soname, *lib.aliases} - {None, lib.name}:
            os.symlink(lib.name, hard_dir / alias)
        checks = functional_checks(lib, hard_dir, d, data, users)
        bad = [c for c in checks if c["outcome"] != "identical"]
        # The load check (and the loader's run) must show the hardened copy mapped if the original loads;
        # a python workload that does not reach the library only counts for less (`exercised` false).
        unused = [
            c
            for c in checks
            if c["kind"] in ("load", "loader")
            and c.get("loads_in_original", True)
            and not c.get("hardened_mapped")
        ]
        for c in checks:
            if c["kind"] == "python":
                c["exercised"] = bool(c.get("hardened_mapped"))
        summary: dict = {"checks": checks, "functional": [c["kind"] for c in checks]}
        if bad:
            summary.update(
                outcome="failed", cause=bad[0]["cause"], reason=bad[0]["cause"], detail=bad[0]["detail"]
            )
        elif unused:
            summary.update(
                outcome="failed",
                cause=f"{unused[0]['kind']}: hardened copy not loaded",
                reason="the process ran, but /proc/self/maps does not show the hardened copy",
            )
        else:
            summary["outcome"] = "identical"
            if not checks[0].get("loads_in_original", True):
                summary["note"] = "does not load in a plain python3.11 either (the same error with both)"
        if row.pop("gate_ok", False):
            row.update(summary)
        else:
            row["functional"] = {"outcome": summary["outcome"], "cause": summary.get("cause")}
    if row["outcome"] in ("failed", "not verified") and keep_failures is not None:
        keep(row, keep_failures / lib.name, [hard, d / "report.json"])
    shutil.rmtree(d, ignore_errors=True)
    return row


def sweep_libs(
    libs: list[Lib],
    work: Path,
    njobs: int,
    keep_failures: Path | None = None,
    progress: Callable[[dict], None] | None = None,
    users: Users | None = None,
) -> list[dict]:
    data = make_data(work / "data")
    users = users if users is not None else program_users()

    def one(lib: Lib) -> dict:
        try:
            row = process_lib(lib, work, data, users, keep_failures)
        except Exception as e:  # a bug of the harness must not hide the other results
            row = {"name": lib.name, "real": lib.real, "outcome": "failed", "cause": "harness error",
                   "reason": f"{type(e).__name__}: {e}"}  # fmt: skip
        if progress:
            progress(row)
        return row

    with ThreadPoolExecutor(njobs) as pool:
        return list(pool.map(one, libs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--libdir", default=LIBDIR)
    ap.add_argument("--out", type=Path, required=True, help="results: libs.json, failures/NAME/")
    ap.add_argument("--jobs", type=int, default=jobs())
    ap.add_argument("--only", default="", help="comma-separated file names, SONAMEs or aliases")
    ap.add_argument("--max-size", type=float, default=0, help="skip files larger than this many MB (0: none)")
    ap.add_argument("--sample", type=int, default=0, help="a random sample of N files (seeded: repeatable)")
    ap.add_argument("--title", default="shared libraries (/usr/lib/x86_64-linux-gnu/*.so*)")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    libs, non_elf = collect_libs(args.libdir)
    skipped = []
    if args.only:
        wanted = set(args.only.split(","))
        libs = [x for x in libs if wanted & {x.name, x.soname, *x.aliases}]
    if args.max_size:
        skipped = [x.name for x in libs if x.size > args.max_size * 1e6]
        libs = [x for x in libs if x.size <= args.max_size * 1e6]
    if args.sample and args.sample < len(libs):
        libs = sorted(random.Random(1).sample(libs, args.sample), key=lambda x: x.name)
    t0 = time.monotonic()
    users = program_users()
    t_index = time.monotonic() - t0
    done = 0

    def progress(row: dict) -> None:
        nonlocal done
        done += 1
        extra = row.get("cause") or row.get("reason") or ""
        secs = (row.get("harden") or {}).get("seconds", "")
        checks = "+".join(row["functional"]) if isinstance(row.get("functional"), list) else ""
        print(
            f"[{done}/{len(libs)}] {row['name']}: {row['outcome']} {checks} {extra} ({secs} s)"[:240],
            flush=True,
        )

    rows = sweep_libs(libs, out / "work", args.jobs, out / "failures", progress, users)
    summary = summarize(rows, non_elf)
    summary.update(
        title=args.title,
        seconds=round(time.monotonic() - t0),
        index_seconds=round(t_index),
        skipped_larger_than_max_size=skipped,
        functional_checks={
            k: sum(1 for r in rows if isinstance(r.get("functional"), list) and k in r["functional"])
            for k in ("load", "python", "program", "loader")
        },
    )
    if skipped:
        summary["note"] = f"Not run (larger than {args.max_size} MB): " + ", ".join(f"`{n}`" for n in skipped)
    write_json(out / "libs.json", {"summary": summary, "rows": rows, "non_elf": non_elf})
    print(json.dumps({k: v for k, v in summary.items() if k != "coverage"}, indent=1)[:20000])
    return 0 if not (summary["outcomes"].get("failed") or summary["outcomes"].get("not verified")) else 1


if __name__ == "__main__":
    sys.exit(main())
