"""The /usr/bin sweep: harden every ELF executable of a directory, run a harmless invocation of the original
and of the hardened file, and compare exit code, stdout and stderr.

Each program is classified:
  identical  hardened (exit 0) and the invocation behaves the same (timing out in both counts as the same)
  refused    `cfiguard harden` exited 2 with a `cfiguard: error: ...` line (unusable input, by design)
  failed     harden crashed or timed out, its report is inconsistent, or the hardened program behaves
             differently (exit code, output, CFI violation, signal)

Where the machine allows it (root, `unshare -m`), the hardened file is bind-mounted over the original's real
path in a private mount namespace, so it runs under the same path and argv[0] as the original (programs that
find their data relative to their own path keep working). Elsewhere it runs from a temp dir under the same
basename and the temp dir is normalised out of the output.

Standalone: python tests/realworld/rw_sweep.py --out DIR [--jobs N] [--bindir /usr/bin] [--only a,b,...]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rw_support import Coverage, Hardened, clean_env, harden, is_elf, jobs, write_json  # noqa: E402

RUN_TIMEOUT = 10.0

# Programs with a small functional invocation (argument lists; {data} is the sweep's data directory). Every
# other program gets `--version` (and `--help` if --version exits non-zero in the original).
FUNCTIONAL: dict[str, list[str]] = {
    "ls": ["-laR", "--color=always", "--time-style=full-iso", "{data}/tree"],
    "cat": ["-A", "{data}/text.txt"],
    "grep": ["-E", "-n", "-i", "^(al|be)[a-z]*[[:space:]]+[0-9]+/tcp", "{data}/text.txt"],
    "sed": ["-n", "-E", "s/^([a-z]+)[[:space:]]+([0-9]+)\\/(tcp|udp).*/\\3:\\2:\\1/p", "{data}/text.txt"],
    "mawk": ["{n[$2]++; s+=length($0)} END {for (k in n) c++; print c, NR, s}", "{data}/text.txt"],
    "sort": ["-t", " ", "-k2,2n", "-k1,1r", "{data}/text.txt"],
    "uniq": ["-c", "-w", "3", "{data}/text.txt"],
    "wc": ["{data}/text.txt", "{data}/other.txt"],
    "cut": ["-d", " ", "-f1,3", "{data}/text.txt"],
    "tac": ["{data}/text.txt"],
    "sha256sum": ["{data}/text.txt", "{data}/other.txt"],
    "md5sum": ["{data}/text.txt"],
    "b2sum": ["{data}/text.txt"],
    "base64": ["{data}/other.txt"],
    "od": ["-A", "x", "-t", "x1z", "-N", "512", "{data}/text.txt"],
    "xxd": ["-l", "256", "{data}/text.txt"],
    "gzip": ["-c", "-n", "-9", "{data}/text.txt"],
    "bzip2": ["-c", "-9", "{data}/text.txt"],
    "xz": ["-c", "-T1", "{data}/text.txt"],
    "zstd": ["-c", "-q", "-19", "{data}/text.txt"],
    "tar": ["-c", "--sort=name", "--owner=0", "--group=0", "--mtime=@0", "-f", "-", "-C", "{data}", "tree"],
    "diff": ["-u", "{data}/text.txt", "{data}/other.txt"],
    "cmp": ["{data}/text.txt", "{data}/other.txt"],
    "expr": ["6", "*", "7", "+", "length", "abcdef"],
    "seq": ["-w", "-s", ",", "1", "7", "500"],
    "factor": ["1234567890", "600851475143", "18446744073709551557"],
    "date": ["-u", "-d", "@1234567890", "+%c|%j|%s|%A"],
    "printf": ["%5.2f|%x|%s|%q\\n", "3.14159", "255", "héllo", "a b"],
    "bash": [
        "-c",
        "f(){ echo $(( $1 * 7 )); }; for i in 1 2 3; do f $i; done; declare -A a=([x]=1 [y]=2); "
        "echo ${#a[@]} ${BASH_VERSINFO[0]}; s=abcdef; echo ${s:1:3} ${s^^}",
    ],
    "dash": [
        "-c",
        "i=0; while [ $i -lt 5 ]; do i=$((i+1)); printf '%s.' $i; done; echo; case x in x) echo ok;; esac",
    ],
    "perl": [
        "-e",
        "my %h = map { $_ => length } qw(a bb ccc); print join(',', map {\"$_=$h{$_}\"} sort keys %h), "
        '"\\n"; printf("%.6f\\n", atan2(1, 1) * 4); print scalar(reverse \'abc\'), "\\n"',
    ],
    "sqlite3": [
        ":memory:",
        "create table t(a, b); insert into t values (1, 'x'), (2, 'y'), (3, 'x');"
        "select b, sum(a), group_concat(a) from t group by b order by b;",
    ],
    "jq": ["-c", "[.[] | select(.n % 3 == 0) | .s] | {count: length, first: .[0]}", "{data}/data.json"],
    "readelf": ["-W", "-h", "-l", "-S", "-d", "/usr/bin/true"],
    "objdump": ["-d", "--no-show-raw-insn", "/usr/bin/true"],
    "nm": ["-D", "--defined-only", "/usr/bin/true"],
    "file": ["{data}/text.txt", "{data}/data.json", "{data}/tree"],
    "find": ["{data}/tree", "-name", "*.txt", "-size", "-100k"],
    "openssl": ["dgst", "-sha256", "{data}/text.txt"],
    "bc": ["-l", "{data}/calc.bc"],
    "c++filt": ["_ZNSt6vectorIiSaIiEE9push_backERKi", "_ZN9__gnu_cxx13new_allocatorIcE8allocateEmPKv"],
    "python3.11": ["-c", "import json, re; print(json.dumps({'a': re.findall(r'\\d+', 'x1y22z333')}))"],
    "tmux": ["-V"],
    "ssh": ["-V"],
    "chattr": [],  # `chattr --version` would parse "-version" as attributes to remove: usage only
}

# The fast part (runs in CI): small, common programs with a functional invocation.
FAST = [
    "ls", "grep", "sed", "mawk", "sort", "sha256sum", "gzip", "xz", "bzip2", "tar", "diff", "dash", "sqlite3",
    "jq", "find", "date", "xxd", "factor", "file", "objdump",
]  # fmt: skip

TEXT_WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho".split()


def make_data(d: Path) -> Path:
    """Deterministic input files for the functional invocations."""
    d.mkdir(parents=True, exist_ok=True)
    lines, x = [], 12345
    for i in range(3000):
        x = (x * 1103515245 + 12345) % (1 << 31)
        w = TEXT_WORDS[x % len(TEXT_WORDS)]
        lines.append(f"{w}{i % 7 or ''} {x % 65536}/{'tcp' if x & 1 else 'udp'} # {w.upper()} {x:x}")
    (d / "text.txt").write_text("\n".join(lines) + "\n")
    (d / "other.txt").write_text("\n".join(ln for i, ln in enumerate(lines) if i % 5) + "\nthe end\n")
    (d / "data.json").write_text(
        json.dumps([{"n": i, "s": TEXT_WORDS[i % 17] * (i % 3 + 1)} for i in range(200)])
    )
    (d / "calc.bc").write_text("scale=30\n4*a(1)\ne(1)\nsqrt(2)\n2^100\nquit\n")
    tree = d / "tree"
    for i in range(12):
        sub = tree / f"d{i % 3}" / f"s{i % 4}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}.txt").write_text(lines[i] * (i + 1))
    return d


@dataclass
class Item:
    name: str  # the /usr/bin entry used to run it
    path: str  # /usr/bin/<name>
    real: str  # realpath (what is hardened)
    size: int
    aliases: list[str] = field(default_factory=list)


def collect(bindir: str = "/usr/bin") -> tuple[list[Item], list[str]]:
    """(one Item per distinct ELF file reachable from bindir, names of the non-ELF entries)."""
    by_inode: dict[tuple[int, int], Item] = {}
    non_elf = []
    for name in sorted(os.listdir(bindir)):
        path = os.path.join(bindir, name)
        if not os.path.isfile(path):
            continue
        if not is_elf(path):
            non_elf.append(name)
            continue
        real = os.path.realpath(path)
        st = os.stat(real)
        key = (st.st_dev, st.st_ino)
        item = by_inode.get(key)
        if item is None:
            by_inode[key] = Item(name, path, real, st.st_size, [name])
        else:
            item.aliases.append(name)
            # Prefer the name the file itself has (clang-14 over clang, perl over perl5.36.0 is first anyway).
            if name == os.path.basename(real) and item.name != os.path.basename(real):
                item.name, item.path = name, path
    return sorted(by_inode.values(), key=lambda i: i.name), non_elf


@functools.cache
def bind_mount_works() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    cmd = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        "mount --bind /bin/true /bin/false",
    ]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@dataclass
class Run:
    rc: int | None  # None: timed out
    stdout: bytes
    stderr: bytes

    def key(self) -> tuple:
        return (self.rc, self.stdout, self.stderr)


def run_captured(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = RUN_TIMEOUT) -> Run:
    """Run with stdin closed, in its own session; on timeout kill the whole process group."""
    p = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = p.communicate(timeout=timeout)
        return Run(p.returncode, out, err)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            out, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            out, err = b"", b""
        return Run(None, out, err)


def program_env(home: Path) -> dict[str, str]:
    env = clean_env(
        {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "TERM": "dumb", "COLUMNS": "100", "HOME": str(home)},
        drop=("DISPLAY", "WAYLAND_DISPLAY", "LD_LIBRARY_PATH", "LD_PRELOAD", "MAKEFLAGS", "MFLAGS"),
    )
    env["TZ"] = "UTC"
    return env


def _fresh(d: Path) -> Path:
    if d.exists():
        shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def invocations(name: str, data: Path) -> list[list[str]]:
    if name in FUNCTIONAL:
        return [[a.replace("{data}", str(data)) for a in FUNCTIONAL[name]]]
    return [["--version"], ["--help"]]


def _decode(b: bytes, limit: int = 1500) -> str:
    s = b.decode(errors="replace")
    return s if len(s) <= limit else s[:limit] + f"... ({len(s)} chars)"


def first_difference(a: bytes, b: bytes) -> str:
    la, lb = a.decode(errors="replace").splitlines(), b.decode(errors="replace").splitlines()
    for i, (x, y) in enumerate(zip(la, lb, strict=False)):
        if x != y:
            return f"line {i + 1}: original {x[:200]!r} / hardened {y[:200]!r}"
    return f"original {len(la)} lines, hardened {len(lb)} lines"


def process(item: Item, work: Path, data: Path, keep_failures: Path | None = None) -> dict:
    """Harden one program and compare one invocation; returns a JSON-able result row."""
    d = work / "items" / item.name
    _fresh(d)
    hard_dir = d / "bin"
    hard_dir.mkdir()
    hard = hard_dir / os.path.basename(item.path)
    h: Hardened = harden(item.real, hard, d / "report.json")
    row: dict = {
        "name": item.name,
        "real": item.real,
        "size": item.size,
        "aliases": item.aliases,
        "harden": {"status": h.status, "rc": h.rc, "seconds": round(h.seconds, 2), "error": h.error_line},
        "counts": h.counts,
        "unguarded": [
            {"address": hex(x["address"]), "kind": x["kind"], "reason": x.get("reason")}
            for x in (h.report or {}).get("sites", [])
            if x["outcome"] == "unguarded"
        ],
    }
    if h.status == "refused":
        reason = h.error_line.removeprefix("cfiguard: error: ").removeprefix(f"{item.real}: ")
        row.update(outcome="refused", reason=reason)
    elif h.status != "ok":
        row.update(outcome="failed", cause=f"harden {h.status}", reason=h.error_line, stderr=h.stderr[-4000:])
    elif h.problems:
        row.update(outcome="failed", cause="report inconsistent", reason="; ".join(h.problems))
    else:
        row.update(compare_program(item, hard, d, data))
    if row["outcome"] == "failed" and keep_failures is not None and hard.exists():
        dest = keep_failures / item.name
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(hard, dest / os.path.basename(item.path))
        if (d / "report.json").exists():
            shutil.copy2(d / "report.json", dest / "report.json")
        write_json(dest / "result.json", row)
    shutil.rmtree(d, ignore_errors=True)
    return row


def compare_program(item: Item, hard: Path, d: Path, data: Path) -> dict:
    bind = bind_mount_works()
    scratch, home = d / "cwd", d / "home"

    def run(args: list[str], hardened: bool) -> Run:
        _fresh(scratch)
        _fresh(home)
        env = program_env(home)
        if not hardened:
            argv = [item.path, *args]
        elif bind:
            script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
            argv = ["unshare", "-m", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh"]
            argv += [str(hard), item.real, item.path, *args]
        else:
            argv = [str(hard), *args]
        r = run_captured(argv, scratch, env)
        if hardened and not bind:  # normalise the temp dir out of the output
            for a, b in ((str(hard.parent), os.path.dirname(item.path)),):
                r = Run(
                    r.rc, r.stdout.replace(a.encode(), b.encode()), r.stderr.replace(a.encode(), b.encode())
                )
        return r

    tried = invocations(item.name, data)
    args, orig = tried[0], run(tried[0], False)
    for alt in tried[1:]:
        if orig.rc == 0:
            break
        alt_run = run(alt, False)
        if alt_run.rc == 0:
            args, orig = alt, alt_run
    hrun = run(args, True)
    res: dict = {
        "args": args,
        "placement": "bind" if bind else "copy",
        "rc": [orig.rc, hrun.rc],
        "output_bytes": [len(orig.stdout) + len(orig.stderr), len(hrun.stdout) + len(hrun.stderr)],
    }
    violation = b"cfiguard: CFI violation" in hrun.stderr
    if orig.key() == hrun.key() and not violation:
        return {**res, "outcome": "identical"}
    if orig.rc is None and hrun.rc is None and not violation:
        return {**res, "outcome": "identical", "note": "timed out in both"}
    # Differences in output alone may be the program's own nondeterminism: run the original again.
    again = run(args, False)
    nondet = again.key() != orig.key()
    if nondet and hrun.rc == orig.rc and not violation:
        return {**res, "outcome": "identical", "note": "nondeterministic output; exit codes equal"}
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
    return {**res, "outcome": "failed", "cause": cause, "reason": cause, "detail": detail}


def sweep(
    items: Iterable[Item],
    work: Path,
    njobs: int,
    keep_failures: Path | None = None,
    progress: Callable[[dict], None] | None = None,
) -> list[dict]:
    data = make_data(work / "data")
    rows = []

    def one(item: Item) -> dict:
        try:
            row = process(item, work, data, keep_failures)
        except Exception as e:  # a bug of the harness must not hide the other results
            row = {"name": item.name, "real": item.real, "outcome": "failed", "cause": "harness error",
                   "reason": f"{type(e).__name__}: {e}"}  # fmt: skip
        if progress:
            progress(row)
        return row

    with ThreadPoolExecutor(njobs) as pool:
        rows = list(pool.map(one, list(items)))
    return rows


def coverage(rows: list[dict]) -> Coverage:
    """Sites added up over the programs that were hardened, with the reasons of the unguarded ones."""
    cov = Coverage()
    for r in rows:
        c = r.get("counts")
        if not c:
            continue
        cov.add(
            r["name"], {"counts": c, "sites": [{**s, "outcome": "unguarded"} for s in r.get("unguarded", [])]}
        )
    return cov


def summarize(rows: list[dict], non_elf: list[str] | None = None) -> dict:
    outcomes = Counter(r["outcome"] for r in rows)
    return {
        "programs": len(rows),
        "non_elf_skipped": len(non_elf or []),
        "outcomes": dict(outcomes),
        "failed_by_cause": dict(Counter(r.get("cause") for r in rows if r["outcome"] == "failed")),
        "refused_by_reason": dict(Counter(r.get("reason") for r in rows if r["outcome"] == "refused")),
        "coverage": coverage(rows).as_dict(),
    }


def render_markdown(doc: dict) -> str:
    """The /usr/bin section of docs/compatibility.md from a sweep.json."""
    rows, summary = doc["rows"], doc["summary"]
    cov = summary["coverage"]
    by = {k: sorted((r for r in rows if r["outcome"] == k), key=lambda r: r["name"]) for k in OUTCOMES}
    out = [
        "| outcome | programs |",
        "|---|---|",
        *(f"| {k} | {len(by[k])} |" for k in OUTCOMES),
        f"| (scripts and other non-ELF files, not run) | {summary['non_elf_skipped']} |",
        "",
        f"Sites over the {sum(1 for r in rows if r.get('counts'))} hardened programs: {cov['found']} found, "
        f"{cov['guarded']} guarded, {cov['safe']} proven safe, {cov['unguarded']} unguarded: "
        f"**{100 * cov['covered_fraction']:.3f}%** guarded or proven safe.",
        "",
        "### Failed",
        "",
    ]
    if by["failed"]:
        out += ["| program | file | cause | detail |", "|---|---|---|---|"]
        for r in by["failed"]:
            d = r.get("detail") or {}
            if "args" in r:
                detail = f"`{' '.join(r['args'])[:60]}`: exit {r['rc'][0]} -> {r['rc'][1]}"
                first = (d.get("hardened_stderr") or "").strip().splitlines()[:1]
                detail += f"; stderr: {first[0][:100]}" if first else ""
            else:
                detail = r.get("reason") or ""
            detail = " ".join(detail.split()).replace("|", "\\|")
            out.append(f"| `{r['name']}` | `{r['real']}` | {r.get('cause')} | {detail} |")
    else:
        out.append("None.")
    out += ["", "### Refused (exit 2, by design)", "", "| program | reason |", "|---|---|"]
    for r in by["refused"]:
        out.append(f"| `{r['name']}` | {r.get('reason')} |")
    ident = by["identical"]
    functional = sum(1 for r in ident if r["name"] in FUNCTIONAL)
    version = sum(1 for r in ident if r.get("args") == ["--version"])
    helped = sum(1 for r in ident if r.get("args") == ["--help"])
    zero = sum(1 for r in ident if r.get("rc") == [0, 0])
    out += [
        "",
        "### Hardened and identical",
        "",
        f"{len(ident)} programs: {functional} run with a functional command, {version} with `--version`, "
        f"{helped} with `--help` (their `--version` fails); {zero} exit 0 in both, the others exit with the "
        "same non-zero code and the same output (an option they do not know, no display, ...).",
        "",
    ]
    notes = [r for r in ident if r.get("note")]
    out.append(", ".join(f"`{r['name']}`" for r in by["identical"]))
    if notes:
        out += ["", "Compared on exit code only, or timing out in both:", ""]
        out += [f"- `{r['name']}` ({' '.join(r.get('args', []))}): {r['note']}" for r in notes]
    return "\n".join(out) + "\n"


OUTCOMES = ("identical", "refused", "failed")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bindir", default="/usr/bin")
    ap.add_argument("--out", type=Path, help="results: sweep.json, failures/NAME/ (hardened file, report)")
    ap.add_argument(
        "--render", type=Path, help="print the markdown tables of an existing sweep.json and exit"
    )
    ap.add_argument("--jobs", type=int, default=jobs())
    ap.add_argument("--only", default="", help="comma-separated names (default: every ELF file)")
    args = ap.parse_args(argv)
    if args.render:
        print(render_markdown(json.loads(args.render.read_text())), end="")
        return 0
    if args.out is None:
        ap.error("--out is required")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    items, non_elf = collect(args.bindir)
    if args.only:
        wanted = set(args.only.split(","))
        items = [i for i in items if wanted & set(i.aliases)]
    t0 = time.monotonic()
    done = 0

    def progress(row: dict) -> None:
        nonlocal done
        done += 1
        extra = row.get("cause") or row.get("reason") or ""
        print(f"[{done}/{len(items)}] {row['name']}: {row['outcome']} {extra}"[:200], flush=True)

    rows = sweep(items, out / "work", args.jobs, keep_failures=out / "failures", progress=progress)
    summary = summarize(rows, non_elf)
    summary["seconds"] = round(time.monotonic() - t0)
    summary["bind_mount"] = bind_mount_works()
    write_json(out / "sweep.json", {"summary": summary, "rows": rows, "non_elf": non_elf})
    print(json.dumps(summary, indent=1))
    return 0 if not summary["outcomes"].get("failed") else 1


if __name__ == "__main__":
    sys.exit(main())
