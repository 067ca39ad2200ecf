"""The runtime workloads: what is hardened, how each side is run, and how big one run is.

Each workload is a pair of commands that differ only in which binaries they load: the original files (copied
into the work directory, so both sides load from the same kind of path) or their hardened versions. Shared
libraries are swapped with LD_LIBRARY_PATH pointing at a directory that holds the copy under its soname; the
executables that reach them carry RUNPATH at most, which LD_LIBRARY_PATH overrides.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import rewrite
from benchmarks.rewrite import RewriteRecord

HERE = Path(__file__).resolve().parent
BM_SCRIPT = HERE / "py" / "bm.py"
PY_BENCHMARKS = [
    "nbody", "float", "fannkuch", "spectral_norm", "richards", "json_dumps", "json_loads", "regex", "pickle",
    "unpack_sequence", "generators", "deltablue", "raytrace",
]  # fmt: skip


@dataclass
class Cmd:
    argv: list[str]
    env: dict[str, str]
    stdin: str | None = None


@dataclass
class Workload:
    """A runnable pair. `command(side, n)` builds the command for side "orig" or "hard" with size n."""

    name: str
    group: str
    command: Callable[[str, int], Cmd]
    n: int = 1  # calibrated size
    hardened: list[str] = field(default_factory=list)  # which files are hardened on the "hard" side


@dataclass
class Setup:
    """Everything prepared in the work directory: workloads that can run, and why others cannot."""

    workloads: list[Workload] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    rewrites: list[RewriteRecord] = field(default_factory=list)
    reports: dict[str, str] = field(default_factory=dict)  # hardened file -> its JSON report


def base_env() -> dict[str, str]:
    """A reproducible environment for children: no inherited LD_LIBRARY_PATH, fixed hash seed, C locale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LD_", "PYTHON"))}
    env.update(PYTHONHASHSEED="0", LC_ALL="C", PYTHONDONTWRITEBYTECODE="1")
    return env


def ldd(path: str) -> dict[str, str]:
    """soname -> resolved path of the libraries the dynamic loader would load for `path`."""
    out = subprocess.run(["ldd", path], capture_output=True, text=True, env=base_env()).stdout
    libs = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\S+) => (/\S+)", line)
        if m:
            libs[m.group(1)] = m.group(2)
    return libs


class Preparer:
    """Builds, copies and hardens into `work`, recording every hardening (they feed the rewrite table)."""

    def __init__(self, work: Path, nice: int, timeout: float) -> None:
        self.work = work
        self.nice = nice
        self.timeout = timeout
        self.setup = Setup()
        work.mkdir(parents=True, exist_ok=True)

    def harden(self, src: str, dst: str) -> bool:
        report = dst + ".report.json"
        rec = rewrite.harden(src, dst, report, timeout=self.timeout, nice=self.nice)
        self.setup.rewrites.append(rec)
        if rec.ok:
            self.setup.reports[dst] = report
        return rec.ok

    def pair_dirs(self, group: str) -> tuple[Path, Path]:
        d = self.work / group
        (d / "orig").mkdir(parents=True, exist_ok=True)
        (d / "hard").mkdir(parents=True, exist_ok=True)
        return d / "orig", d / "hard"

    def pair_files(self, group: str, files: list[str]) -> tuple[Path, Path] | str:
        """Copy each file into <group>/orig and harden it into <group>/hard under the same name. Returns the
        two directories, or the reason the first failing file could not be hardened."""
        orig, hard = self.pair_dirs(group)
        for f in files:
            name = os.path.basename(f)
            shutil.copy2(os.path.realpath(f), orig / name)
            if not self.harden(str(orig / name), str(hard / name)):
                rec = self.setup.rewrites[-1]
                return f"hardening {f} failed (exit {rec.returncode}): {rec.summary}"
        return orig, hard

    def skip(self, group: str, why: str) -> None:
        self.setup.skipped[group] = why


def _compile(compiler: str, src: Path, out: Path, extra: list[str]) -> str | None:
    if shutil.which(compiler) is None:
        return f"{compiler} not found"
    r = subprocess.run([compiler, "-O2", *extra, "-o", str(out), str(src)], capture_output=True, text=True)
    return None if r.returncode == 0 else f"{compiler} failed: {r.stderr.strip().splitlines()[-1:]}"


def prepare_micro(pre: Preparer) -> None:
    """The indirect-call-heavy C micro-benchmark: the worst case."""
    orig, hard = pre.pair_dirs("micro")
    err = _compile("gcc", HERE / "src" / "micro_icall.c", orig / "micro_icall", [])
    if err:
        return pre.skip("micro", err)
    if not pre.harden(str(orig / "micro_icall"), str(hard / "micro_icall")):
        return pre.skip("micro", f"hardening failed: {pre.setup.rewrites[-1].summary}")
    env = base_env()

    def cmd(side: str, n: int) -> Cmd:
        return Cmd([str((orig if side == "orig" else hard) / "micro_icall"), str(n)], env)

    pre.setup.workloads.append(Workload("micro_icall", "C micro", cmd, 2, ["micro_icall"]))


def prepare_cxx(pre: Preparer) -> None:
    """The C++ program with virtual calls, std::function, comparators and exceptions."""
    orig, hard = pre.pair_dirs("cxx")
    err = _compile("g++", HERE / "src" / "vcall_exc.cpp", orig / "vcall_exc", [])
    if err:
        return pre.skip("C++", err)
    if not pre.harden(str(orig / "vcall_exc"), str(hard / "vcall_exc")):
        return pre.skip("C++", f"hardening failed: {pre.setup.rewrites[-1].summary}")
    env = base_env()

    def cmd(side: str, n: int) -> Cmd:
        return Cmd([str((orig if side == "orig" else hard) / "vcall_exc"), str(n)], env)

    pre.setup.workloads.append(Workload("vcall_exc", "C++", cmd, 5, ["vcall_exc"]))


def _py_workloads(
    group: str, interp: Callable[[str], str], envs: dict[str, dict], hardened: list[str]
) -> list:
    out = []
    for b in PY_BENCHMARKS:

        def cmd(side: str, n: int, b: str = b) -> Cmd:
            return Cmd([interp(side), "-I", str(BM_SCRIPT), b, str(n)], envs[side])

        out.append(Workload(f"{b}", group, cmd, 1, hardened))
    return out


def prepare_libpython(pre: Preparer) -> None:
    """CPython (this interpreter's installation) through a hardened libpython3.X.so."""
    group = "libpython"
    libdir, ldlib = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    interp = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not libdir or not ldlib:
        return pre.skip(group, "this interpreter is not linked against a shared libpython")
    libs = ldd(interp)
    soname = next((s for s in libs if s.startswith("libpython")), None)
    if soname is None:
        return pre.skip(group, f"{interp} does not load a libpython")
    res = pre.pair_files(group, [libs[soname]])
    if isinstance(res, str):
        return pre.skip(group, res)
    orig, hard = res
    envs = {
        "orig": {**base_env(), "LD_LIBRARY_PATH": str(orig)},
        "hard": {**base_env(), "LD_LIBRARY_PATH": str(hard)},
    }
    pre.setup.workloads += _py_workloads(
        f"CPython {interp} + hardened {soname}", lambda side: interp, envs, [soname]
    )


def prepare_debian_python(pre: Preparer) -> None:
    """Debian's /usr/bin/python3.11 (stripped, non-PIE) hardened as a whole executable."""
    group = "debian-python"
    exe = "/usr/bin/python3.11"
    if not os.path.exists(exe):
        return pre.skip(group, f"{exe} not installed")
    res = pre.pair_files(group, [exe])
    if isinstance(res, str):
        return pre.skip(group, res)
    orig, hard = res
    env = base_env()
    pre.setup.workloads += _py_workloads(
        f"Debian {exe} hardened", lambda side: str((orig if side == "orig" else hard) / "python3.11"),
        {"orig": env, "hard": env}, ["python3.11"],
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------------ data


def _doc_text(limit: int) -> bytes:
    """Real English text: the plain-text copyright files of installed Debian packages, in a fixed order."""
    chunks, total = [], 0
    for p in sorted(Path("/usr/share/doc").glob("*/copyright")):
        try:
            b = p.read_bytes()
        except OSError:
            continue
        chunks.append(b)
        total += len(b)
        if total >= limit:
            break
    return b"".join(chunks)[:limit]


def _csv(limit: int) -> bytes:
    """A deterministic sales-like CSV: ids, dates, names, amounts, status words (typical tabular data)."""
    rnd = random.Random(42)
    cities = ["Berlin", "Paris", "Lisbon", "Oslo", "Rome", "Vienna", "Madrid", "Prague", "Dublin", "Athens"]
    status = ["shipped", "pending", "cancelled", "returned", "delivered"]
    lines = [b"id,date,customer,city,amount,quantity,status\n"]
    total, i = 0, 0
    while total < limit:
        i += 1
        line = (
            f"{i},2024-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d},customer{rnd.randint(1, 50000)},"
            f"{rnd.choice(cities)},{rnd.uniform(1, 2000):.2f},{rnd.randint(1, 20)},{rnd.choice(status)}\n"
        ).encode()
        lines.append(line)
        total += len(line)
    return b"".join(lines)


def make_corpus(path: Path, size: int) -> Path:
    if not path.exists() or path.stat().st_size != size:
        half = size // 2
        text = _doc_text(half)
        path.write_bytes(text + _csv(size - len(text))[: size - len(text)])
    return path


def prepare_compressors(pre: Preparer, corpus_bytes: int) -> None:
    """gzip, xz (through liblzma) and zstd, compress and decompress a few MB of text + CSV."""
    data = make_corpus(pre.work / "corpus.txt", corpus_bytes)
    # level: compression work comparable across tools; xz -3 keeps one run near a second on this corpus
    tools = {"gzip": ("-6", "gz"), "xz": ("-3", "xz"), "zstd": ("-9", "zst")}
    for tool, (level, ext) in tools.items():
        exe = shutil.which(tool)
        if exe is None:
            pre.skip(tool, f"{tool} not installed (apt-get install -y {tool})")
            continue
        libs = [p for s, p in ldd(exe).items() if re.match(r"lib(lzma|zstd|z)\.so", s)]
        needed = [
            p for p in libs if tool != "zstd" or "zstd" in p
        ]  # zstd links libz/liblzma only for -format
        res = pre.pair_files(tool, [exe, *needed])
        if isinstance(res, str):
            pre.skip(tool, res)
            continue
        orig, hard = res
        compressed = pre.work / f"corpus.txt.{ext}"
        subprocess.run([exe, level, "-c", str(data)], stdout=open(compressed, "wb"), check=True)  # noqa: SIM115
        names = [os.path.basename(p) for p in [exe, *needed]]
        pre.setup.workloads += _compressor_pair(tool, level, orig, hard, data, compressed, names)


def _compressor_pair(
    tool: str, level: str, orig: Path, hard: Path, data: Path, compressed: Path, names: list[str]
) -> list[Workload]:
    """Compress the corpus n times (n file arguments, one output stream) and decompress it n times."""
    envs = {
        "orig": {**base_env(), "LD_LIBRARY_PATH": str(orig)},
        "hard": {**base_env(), "LD_LIBRARY_PATH": str(hard)},
    }

    def comp(side: str, n: int) -> Cmd:
        return Cmd(
            [str((orig if side == "orig" else hard) / tool), level, "-c", *[str(data)] * n], envs[side]
        )

    def decomp(side: str, n: int) -> Cmd:
        return Cmd(
            [str((orig if side == "orig" else hard) / tool), "-d", "-c", *[str(compressed)] * n], envs[side]
        )

    mb = data.stat().st_size / 1e6
    return [
        Workload(f"{tool} {level} compress {mb:.0f} MB", "compressors", comp, 1, names),
        Workload(f"{tool} decompress {mb:.0f} MB", "compressors", decomp, 4, names),
    ]


# ------------------------------------------------------------------------------------------------------ sqlite


def sql_script(path: Path, orders: int, db: str) -> None:
    """A realistic SQL session: bulk inserts in a transaction (parsed one by one), indexes, joins, GROUP BY
    aggregates, a window function, updates and deletes, on a file database."""
    rnd = random.Random(7)
    cities = ["Berlin", "Paris", "Lisbon", "Oslo", "Rome", "Vienna", "Madrid", "Prague", "Dublin", "Athens"]
    customers = max(100, orders // 10)
    lines = [
        f".open --new {db}",
        "PRAGMA synchronous=OFF; PRAGMA journal_mode=MEMORY;",
        "CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT, city TEXT, since INTEGER);",
        "CREATE TABLE orders(id INTEGER PRIMARY KEY, customer INTEGER, amount REAL, qty INTEGER, status TEXT,"
        " day INTEGER);",
        "BEGIN;",
    ]
    for i in range(1, customers + 1):
        lines.append(
            f"INSERT INTO customers VALUES({i},'customer {i}','{rnd.choice(cities)}',{rnd.randint(0, 3650)});"
        )
    status = ["shipped", "pending", "cancelled", "returned"]
    for i in range(1, orders + 1):
        lines.append(
            f"INSERT INTO orders VALUES({i},{rnd.randint(1, customers)},{rnd.uniform(1, 500):.2f},"
            f"{rnd.randint(1, 9)},'{rnd.choice(status)}',{rnd.randint(0, 365)});"
        )
    lines += [
        "COMMIT;",
        "CREATE INDEX orders_customer ON orders(customer);",
        "CREATE INDEX orders_day ON orders(day, status);",
        "CREATE INDEX customers_city ON customers(city);",
        "SELECT c.city, count(*), round(sum(o.amount), 2) FROM orders o JOIN customers c ON c.id = o.customer"
        " GROUP BY c.city ORDER BY 3 DESC;",
        "SELECT status, count(*), round(avg(amount), 2), max(qty) FROM orders GROUP BY status ORDER BY status;",
        "SELECT c.name, t.total FROM (SELECT customer, sum(amount * qty) AS total FROM orders GROUP BY customer)"
        " t JOIN customers c ON c.id = t.customer ORDER BY t.total DESC LIMIT 5;",
        "SELECT day, round(sum(amount) OVER (ORDER BY day ROWS BETWEEN 6 PRECEDING AND CURRENT ROW), 2)"
        " FROM (SELECT day, sum(amount) AS amount FROM orders GROUP BY day) ORDER BY day DESC LIMIT 3;",
        "SELECT count(*) FROM orders WHERE customer IN (SELECT id FROM customers WHERE city = 'Oslo')"
        " AND day BETWEEN 100 AND 200;",
        "UPDATE orders SET status = 'archived' WHERE day < 60;",
        "DELETE FROM orders WHERE amount < 5;",
        "SELECT status, count(*) FROM orders GROUP BY status ORDER BY status;",
        "SELECT count(DISTINCT customer), round(total_changes() / 1000.0) FROM orders;",
    ]
    path.write_text("\n".join(lines) + "\n")


def prepare_sqlite(pre: Preparer, orders: int) -> None:
    """Debian's sqlite3 CLI and libsqlite3 hardened, on a generated SQL session."""
    exe = shutil.which("sqlite3")
    if exe is None:
        return pre.skip("sqlite3", "sqlite3 not installed (apt-get install -y sqlite3)")
    libs = [p for s, p in ldd(exe).items() if s.startswith("libsqlite3")]
    res = pre.pair_files("sqlite3", [exe, *libs])
    if isinstance(res, str):
        return pre.skip("sqlite3", res)
    orig, hard = res
    for side in ("orig", "hard"):
        sql_script(pre.work / f"session-{side}.sql", orders, str(pre.work / f"bench-{side}.db"))
    envs = {
        "orig": {**base_env(), "LD_LIBRARY_PATH": str(orig)},
        "hard": {**base_env(), "LD_LIBRARY_PATH": str(hard)},
    }
    names = [os.path.basename(p) for p in [exe, *libs]]

    def cmd(side: str, n: int) -> Cmd:
        # n repetitions of the session, each on a fresh database (.open --new)
        script = pre.work / f"session-{side}.sql"
        rep = pre.work / f"session-{side}-x{n}.sql"
        if not rep.exists():
            rep.write_text(f".read {script}\n" * n)
        d = orig if side == "orig" else hard
        return Cmd([str(d / "sqlite3"), "-batch", "-bail"], envs[side], stdin=str(rep))

    pre.setup.workloads.append(Workload(f"sqlite3 session ({orders} inserts)", "sqlite3", cmd, 1, names))


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]
