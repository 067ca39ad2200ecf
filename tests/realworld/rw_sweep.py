"""The /usr/bin (and /usr/sbin) sweep: harden every ELF executable of a directory, re-check the output with
`cfiguard verify`, run a harmless invocation of the original and of the hardened file, and compare exit code,
stdout and stderr.

Each program is classified (the release gate passes a file only if it is `identical`):
  identical     harden exited 0, `cfiguard verify` of the output exited 0, the report has 0 unguarded sites,
                and the invocation behaves the same (timing out in both counts as the same)
  not verified  harden exited 1: its output did not pass the independent verifier and was not written (cause:
                the first finding's check and reason); also, flagged as such in the cause, an output that
                harden accepted but that `cfiguard verify` rejects or whose report has unguarded sites
  refused       `cfiguard harden` exited 2 with a `cfiguard: error: ...` line (unusable input, by design)
  failed        harden crashed (an internal error, any other exit) or timed out, its report is inconsistent,
                or the hardened program behaves differently (exit code, output, CFI violation, signal)

Where the machine allows it (root, `unshare -m`), the hardened file is bind-mounted over the original's real
path in a private mount namespace, so it runs under the same path and argv[0] as the original (programs that
find their data relative to their own path keep working). Elsewhere it runs from a temp dir under the same
basename and the temp dir is normalised out of the output.

With --isolate (used for /usr/sbin) both runs also get their own PID, network, UTS and IPC namespaces
(`unshare -p -f --mount-proc -n -u -i`): a system tool that does more than print its version only sees an
empty network namespace and its own processes.

Standalone: python tests/realworld/rw_sweep.py --out DIR [--jobs N] [--bindir /usr/bin] [--only a,b,...]
            [--isolate] [--skip-files-of /usr/bin]
Markdown:   python tests/realworld/rw_sweep.py --render OUT/sweep.json [OUT2/libs.json ...]
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
from rw_support import (  # noqa: E402
    Coverage,
    Finding,
    Hardened,
    clean_env,
    harden,
    is_elf,
    jobs,
    reason_class,
    verify,
    write_json,
)

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
    # /usr/sbin (run with --isolate: own network and PID namespaces); read-only commands only
    "ldconfig": ["-p"],
    "sysctl": ["-n", "kernel.ostype", "vm.overcommit_memory"],
    "ip": ["-d", "-o", "link", "show"],
    "tc": ["-s", "qdisc", "show"],
    "bridge": ["link", "show"],
    "capsh": ["--decode=0x3fffffffff"],
    "getcap": ["-r", "/usr/bin"],
    "blkid": ["-p", "-o", "export", "{data}/text.txt"],
    "filefrag": ["{data}/text.txt"],
    "isosize": ["{data}/text.txt"],
    "fstab-decode": ["/bin/echo", "a\\040b", "c"],
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


def file_keys(bindir: str) -> dict[tuple[int, int], str]:
    """(st_dev, st_ino) of every ELF file reachable from bindir -> one of its paths there."""
    out: dict[tuple[int, int], str] = {}
    for name in sorted(os.listdir(bindir)):
        path = os.path.join(bindir, name)
        if os.path.isfile(path) and is_elf(path):
            st = os.stat(path)
            out.setdefault((st.st_dev, st.st_ino), path)
    return out


def collect(
    bindir: str = "/usr/bin", skip: dict[tuple[int, int], str] | None = None, skipped: dict | None = None
) -> tuple[list[Item], list[str]]:
    """(one Item per distinct ELF file reachable from bindir, names of the non-ELF entries). Files whose key
    is in `skip` (the same file reached from another directory already swept) are left out and recorded in
    `skipped` (name -> the other path)."""
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
        if skip and key in skip:
            if skipped is not None:
                skipped[name] = skip[key]
            continue
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


MAX_FINDINGS = 10  # findings kept per row


def unguarded_sites(report: dict | None) -> list[dict]:
    return [
        {"address": hex(x["address"]), "kind": x["kind"], "reason": x.get("reason")}
        for x in (report or {}).get("sites", [])
        if x["outcome"] == "unguarded"
    ]


def gate_row(name: str, real: str, h: Hardened, out: Path) -> dict:
    """The part of a result row that does not depend on the kind of file: harden, the report, and
    `cfiguard verify` of the output. Sets `outcome` unless the file still needs its functional check
    (then `outcome` is absent; `gate_ok` says whether harden + verify + 0 unguarded all passed)."""
    row: dict = {
        "name": name,
        "real": real,
        "harden": {"status": h.status, "rc": h.rc, "seconds": round(h.seconds, 2), "error": h.error_line},
        "counts": h.counts if h.rc == 0 else {},
        "unguarded": unguarded_sites(h.report) if h.rc == 0 else [],
    }
    if h.status == "refused":
        reason = h.error_line.removeprefix("cfiguard: error: ").removeprefix(f"{real}: ")
        row.update(outcome="refused", reason=reason)
        return row
    if h.status == "unverified":
        findings = h.findings
        row["rejected_counts"] = dict((h.report or {}).get("counts") or {})
        row.update(describe_findings(findings, h.report))
        row.update(not_verified(findings, "harden exit 1", h.report))
        return row
    if h.status != "ok":
        row.update(outcome="failed", cause=f"harden {h.status}", reason=h.error_line, stderr=h.stderr[-4000:])
        return row
    if h.problems:
        row.update(outcome="failed", cause="report inconsistent", reason="; ".join(h.problems))
        return row
    v = verify(out)
    row["verify"] = {"status": v.status, "rc": v.rc, "seconds": round(v.seconds, 2), "error": v.error}
    if v.rc != 0:
        row.update(describe_findings(v.findings, h.report))
        if v.findings:
            row.update(not_verified(v.findings, "harden exit 0, but `cfiguard verify` exit 1", h.report))
        else:
            row.update(outcome="failed", cause=f"verify {v.status}", reason=v.error or "")
        return row
    if row["unguarded"]:
        u = row["unguarded"][0]
        row.update(unguarded_causes(row["unguarded"]))
        row.update(
            outcome="not verified",
            stage="harden exit 0 and verified, but unguarded sites",
            check="unguarded",
            address=u["address"],
            reason=u["reason"] or "",
            cause=f"unguarded: {u['reason']}",
            cause_class=f"unguarded: {reason_class(u['reason'] or '')}",
        )
        return row
    row["gate_ok"] = True
    return row


def site_reasons(report: dict | None) -> dict[int, str]:
    """address -> why harden left the site unguarded (the report's reason), for the unguarded sites."""
    return {
        s["address"]: s.get("reason") or ""
        for s in (report or {}).get("sites", [])
        if s["outcome"] == "unguarded"
    }


def root_cause(f: Finding, reasons: dict[int, str]) -> str:
    """The finding with the rewriter's reason for the site, if the report has one: `check: why` with
    addresses elided (the common cause a developer fixes)."""
    why = reasons.get(f.address) if f.address is not None else None
    return f"{f.check}: {reason_class(why or f.reason)}"


def describe_findings(findings: list[Finding], report: dict | None) -> dict:
    reasons = site_reasons(report)
    kept = []
    for f in findings[:MAX_FINDINGS]:
        d = f.as_dict()
        if f.address in reasons:
            d["harden_reason"] = reasons[f.address]
        kept.append(d)
    examples: dict[str, dict] = {}  # root cause -> its first finding
    for f in findings:
        c = root_cause(f, reasons)
        if c not in examples:
            examples[c] = {
                **f.as_dict(),
                **({"harden_reason": reasons[f.address]} if f.address in reasons else {}),
            }
    return {
        "cause_examples": examples,
        "findings": kept,
        "findings_total": len(findings),
        "findings_by_check": dict(Counter(f.check for f in findings)),
        "root_causes": dict(Counter(root_cause(f, reasons) for f in findings).most_common()),
    }


def unguarded_causes(unguarded: list[dict]) -> dict:
    """root_causes / cause_examples for an output that verified but whose report has unguarded sites."""
    causes: Counter = Counter()
    examples: dict[str, dict] = {}
    for u in unguarded:
        c = f"unguarded: {reason_class(u.get('reason') or '')}"
        causes[c] += 1
        examples.setdefault(
            c, {"check": "unguarded", "address": u["address"], "reason": u.get("reason") or ""}
        )
    return {"findings_total": len(unguarded), "root_causes": dict(causes), "cause_examples": examples}


def not_verified(findings: list[Finding], stage: str, report: dict | None = None) -> dict:
    """The outcome fields of a file that did not pass: its first finding is the cause."""
    f = findings[0] if findings else Finding("(none)", None, "no finding reported")
    why = site_reasons(report).get(f.address) if f.address is not None else None
    return {
        "outcome": "not verified",
        "stage": stage,
        "check": f.check,
        "address": None if f.address is None else hex(f.address),
        "reason": f.reason,
        **({"harden_reason": why} if why else {}),
        "cause": f"{f.check}: {f.reason}" + (f" ({why})" if why else ""),
        "cause_class": f"{f.check}: {reason_class(why or f.reason)}",
    }


def keep(row: dict, dest: Path, files: Iterable[Path]) -> None:
    """Keep the hardened file and report of a file that did not pass, and its result row."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f.exists():
            shutil.copy2(f, dest / f.name)
    write_json(dest / "result.json", row)


def process(
    item: Item, work: Path, data: Path, keep_failures: Path | None = None, isolate: bool = False
) -> dict:
    """Harden one program, verify it, and compare one invocation; returns a JSON-able result row."""
    d = work / "items" / item.name
    _fresh(d)
    hard_dir = d / "bin"
    hard_dir.mkdir()
    hard = hard_dir / os.path.basename(item.path)
    h: Hardened = harden(item.real, hard, d / "report.json")
    row = gate_row(item.name, item.real, h, hard)
    row.update(size=item.size, aliases=item.aliases)
    if h.rc == 0 and row.get("outcome") != "failed":
        functional = compare_program(item, hard, d, data, isolate)
        if row.pop("gate_ok", False):
            row.update(functional)
        else:  # not verified: keep what the functional check found, the outcome stays
            row["functional"] = {
                k: functional[k] for k in ("outcome", "cause", "args", "rc") if k in functional
            }
    if row["outcome"] in ("failed", "not verified") and keep_failures is not None:
        keep(row, keep_failures / item.name, [hard, d / "report.json"])
    shutil.rmtree(d, ignore_errors=True)
    return row


ISOLATE = ["-p", "-f", "--mount-proc", "-n", "-u", "-i"]  # with -m: own PID, network, UTS, IPC namespaces


def compare_program(item: Item, hard: Path, d: Path, data: Path, isolate: bool = False) -> dict:
    bind = bind_mount_works()
    isolate = isolate and bind  # both need root and unshare
    scratch, home = d / "cwd", d / "home"

    def run(args: list[str], hardened: bool) -> Run:
        _fresh(scratch)
        _fresh(home)
        env = program_env(home)
        ns = ["unshare", "-m", *(ISOLATE if isolate else []), "--propagation", "private", "--"]
        if not hardened:
            argv = [*(ns if isolate else []), item.path, *args]
        elif bind:
            script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
            argv = [*ns, "/bin/sh", "-c", script, "sh"]
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
        "placement": ("bind+isolated" if isolate else "bind") if bind else "copy",
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
    if not nondet and hrun.rc == orig.rc and not violation:
        # Output that depends on timing shows only now and then (groff --version prints the versions of
        # the helpers it runs in a pipeline in the order they finish): one more pair of runs.
        hrun2 = run(args, True)
        if hrun2.key() == orig.key():
            return {**res, "outcome": "identical", "note": "output differed once; the same on a second run"}
        nondet = run(args, False).key() != orig.key()
    if nondet and hrun.rc == orig.rc and not violation:
        return {**res, "outcome": "identical", "note": "nondeterministic output; exit codes equal"}
    if (
        hrun.rc == orig.rc
        and not violation
        and all(
            sorted(x.splitlines()) == sorted(y.splitlines())
            for x, y in ((orig.stdout, hrun.stdout), (orig.stderr, hrun.stderr))
        )
    ):  # the same lines in another order: helpers that race (groff --version: 3 of 5 runs in one order)
        return {**res, "outcome": "identical", "note": "the same output lines in another order"}
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
    isolate: bool = False,
) -> list[dict]:
    data = make_data(work / "data")
    rows = []

    def one(item: Item) -> dict:
        try:
            row = process(item, work, data, keep_failures, isolate)
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


OUTCOMES = ("identical", "not verified", "refused", "failed")
OUTCOME_TITLES = {
    "identical": "hardened and verified",
    "not verified": "not verified",
    "refused": "refused",
    "failed": "failed",
}


def _example(r: dict) -> dict:
    return {
        k: r[k]
        for k in (
            "name",
            "real",
            "address",
            "check",
            "reason",
            "harden_reason",
            "stage",
            "findings_total",
            "args",
            "rc",
        )  # fmt: skip
        if k in r
    }


def _groups(rows: list[dict], key: str) -> dict:
    """rows grouped by `key` (cause_class / cause / reason), biggest group first; each group names its files,
    those with the most findings first, and keeps 3 examples."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r.get(key) or r.get("cause") or "(none)", []).append(r)
    out = {}
    for k, rs in sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        rs = sorted(rs, key=lambda r: (-(r.get("findings_total") or 0), -(r.get("size") or 0), r["name"]))
        out[k] = {
            "files": len(rs),
            "names": [r["name"] for r in rs],
            "findings": sum(r.get("findings_total") or 0 for r in rs),
            "examples": [_example(r) for r in rs[:3]],
        }
    return out


def root_cause_groups(rows: list[dict]) -> dict:
    """Every cause (check: the rewriter's reason) over all findings of the files that did not verify: how
    many findings and files, the files with the most such findings first, and up to 3 examples each."""
    acc: dict[str, dict] = {}
    for r in rows:
        if not r.get("root_causes") and r.get("unguarded") and r.get("check") == "unguarded":
            r = {**r, **unguarded_causes(r["unguarded"])}  # rows of a harness before unguarded_causes
        for cause, n in (r.get("root_causes") or {r.get("cause_class", "(none)"): 1}).items():
            if cause.endswith(" findings omitted"):
                continue  # the verifier's "more CHECK findings omitted" (it keeps 1000 per check)
            g = acc.setdefault(cause, {"findings": 0, "per_file": Counter(), "examples": []})
            g["findings"] += n
            g["per_file"][r["name"]] += n
    by_name = {
        r["name"]: (
            {**r, **unguarded_causes(r["unguarded"])}
            if not r.get("root_causes") and r.get("unguarded") and r.get("check") == "unguarded"
            else r
        )
        for r in rows
    }
    out = {}
    for cause, g in sorted(acc.items(), key=lambda kv: (-len(kv[1]["per_file"]), -kv[1]["findings"])):
        top = [n for n, _ in g["per_file"].most_common()]
        examples = []
        for n in top:
            f = (by_name[n].get("cause_examples") or {}).get(cause)
            if f:
                examples.append({"name": n, "real": by_name[n]["real"], **f})
            if len(examples) == 3:
                break
        out[cause] = {
            "files": len(g["per_file"]),
            "findings": g["findings"],
            "most_affected": dict(g["per_file"].most_common(8)),
            "examples": examples,
        }
    return out


def summarize(rows: list[dict], non_elf: list[str] | None = None) -> dict:
    outcomes = Counter(r["outcome"] for r in rows)
    nv = [r for r in rows if r["outcome"] == "not verified"]
    failed = [r for r in rows if r["outcome"] == "failed"]
    checks: Counter = Counter()
    for r in nv:
        checks.update(r.get("findings_by_check") or {r.get("check", "(none)"): r.get("findings_total", 1)})
    return {
        "programs": len(rows),
        "files": len(rows),
        "non_elf_skipped": len(non_elf or []),
        "outcomes": dict(outcomes),
        "gate": {k: outcomes.get(k, 0) for k in OUTCOMES},
        "unguarded_sites": sum((r.get("counts") or {}).get("unguarded", 0) for r in rows),
        "unguarded_sites_in_rejected_outputs": sum(
            (r.get("rejected_counts") or {}).get("unguarded", 0) for r in rows
        ),
        "findings_by_check": dict(checks.most_common()),
        "not_verified_by_cause": _groups(nv, "cause_class"),
        "not_verified_by_check": _groups(nv, "check"),
        "not_verified_root_causes": root_cause_groups(nv),
        "failed_by_cause": _groups(failed, "cause"),
        "refused_by_reason": dict(Counter(r.get("reason") for r in rows if r["outcome"] == "refused")),
        "coverage": coverage(rows).as_dict(),
    }


def _cell(x: object) -> str:
    return " ".join(str(x).split()).replace("|", "\\|")


def gate_table(docs: list[tuple[str, dict]]) -> list[str]:
    """One row per group: files, hardened and verified, not verified, refused, failed, unguarded sites."""
    out = [
        "| group | files | hardened and verified | not verified | refused | failed | unguarded sites |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for title, doc in docs:
        g, sm = doc["summary"]["gate"], doc["summary"]
        out.append(
            f"| {title} | {sm['files']} | {g['identical']} | {g['not verified']} | {g['refused']} | "
            f"{g['failed']} | {sm['unguarded_sites']} |"
        )
    return out


def render_group(title: str, doc: dict, examples: int = 3) -> str:
    """The markdown section of one group (a sweep.json, libs.json or wheels.json)."""
    rows, sm = doc["rows"], doc["summary"]
    g = sm["gate"]
    out = [f"### {title}", ""]
    out += [
        "| files | hardened and verified | not verified | refused | failed | unguarded sites |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {sm['files']} | {g['identical']} | {g['not verified']} | {g['refused']} | {g['failed']} | "
        f"{sm['unguarded_sites']} |",
        "",
    ]
    if sm.get("note"):
        out += [sm["note"], ""]
    cov = sm["coverage"]
    if cov["found"]:
        out += [
            f"Sites over the {sum(1 for r in rows if r.get('counts'))} files hardened with exit 0: "
            f"{cov['found']:,} found, {cov['guarded']:,} guarded, {cov['safe']:,} proven safe, "
            f"{cov['unguarded']:,} unguarded.",
            "",
        ]
    if sm["not_verified_by_cause"]:
        out += [
            "Not verified, by cause: the verifier's check and the rewriter's reason for the site (from the "
            "report; addresses elided). A file with findings of several causes is counted under each; the "
            "first finding decides the file's `cause` in the JSON.",
            "",
            "| check: cause | files | findings | most affected (findings) |",
            "|---|---:|---:|---|",
        ]
        causes = sorted(
            sm["not_verified_root_causes"].items(), key=lambda kv: (-kv[1]["files"], -kv[1]["findings"])
        )
        for cause, grp in causes:
            most = sorted(
                grp["most_affected"].items(), key=lambda kv: (-kv[1], kv[0])
            )  # JSON keys are sorted
            top = ", ".join(f"`{n}` ({k})" for n, k in most[:6])
            more = f", ... ({grp['files'] - 6} more)" if grp["files"] > 6 else ""
            out.append(f"| {_cell(cause)} | {grp['files']} | {grp['findings']} | {top}{more} |")
        out += ["", "Examples (reproduce with `cfiguard harden FILE -o /tmp/x`):", ""]
        for cause, grp in causes:
            exs = grp["examples"][:examples]
            out.append(f"- {_cell(cause)}:")
            for ex in exs:
                why = f" ({_cell(ex['harden_reason'])})" if ex.get("harden_reason") else ""
                out.append(
                    f"  - `{ex['real']}` at {ex.get('address') or '-'}: {ex.get('check')}: "
                    f"{_cell(ex.get('reason'))}{why}"
                )
        odd = [r for r in rows if r["outcome"] == "not verified" and "exit 1" not in r.get("stage", "exit 1")]
        if odd:
            out += ["", "Harden exited 0 but the gate failed:", ""]
            out += [f"- `{r['real']}`: {r['stage']}: {_cell(r.get('cause'))}" for r in odd]
        out.append("")
    failed = sorted((r for r in rows if r["outcome"] == "failed"), key=lambda r: r["name"])
    if failed:
        out += ["Failed:", "", "| file | cause | detail |", "|---|---|---|"]
        for r in failed:
            d = r.get("detail") or {}
            if "args" in r:
                detail = f"`{' '.join(r['args'])[:60]}`: exit {r['rc'][0]} -> {r['rc'][1]}"
                first = (d.get("hardened_stderr") or "").strip().splitlines()[:1]
                detail += f"; stderr: {first[0][:100]}" if first else ""
            else:
                detail = r.get("reason") or ""
                first = (d.get("hardened_stderr") or "").strip().splitlines()[:1]
                detail += f"; stderr: {first[0][:120]}" if first and first[0] not in detail else ""
            out.append(f"| `{r['real']}` | {_cell(r.get('cause'))} | {_cell(detail)[:300]} |")
        out.append("")
    refused = Counter(r.get("reason") for r in rows if r["outcome"] == "refused")
    if refused:
        out += ["Refused (exit 2, by design):", ""]
        for reason, n in refused.most_common():
            names = sorted(r["name"] for r in rows if r["outcome"] == "refused" and r.get("reason") == reason)
            out.append(f"- {_cell(reason)}: {n} (" + ", ".join(f"`{x}`" for x in names[:8])
                       + (", ..." if n > 8 else "") + ")")  # fmt: skip
        out.append("")
    notes: dict[str, list[str]] = {}
    for r in rows:
        if r["outcome"] == "identical" and r.get("note"):
            args = " ".join(r.get("args", []))
            notes.setdefault(r["note"], []).append(f"`{r['name']}`" + (f" ({_cell(args)})" if args else ""))
    if notes:
        out += ["Passed with a weaker comparison:", ""]
        out += [f"- {note}: {len(names)}: " + ", ".join(names) for note, names in notes.items()]
        out.append("")
    return "\n".join(out)


def render_markdown(doc: dict, title: str | None = None) -> str:
    """The section of docs/compatibility.md for one sweep.json."""
    return render_group(title or doc["summary"].get("title") or "/usr/bin", doc) + "\n"


def render_all(paths: list[Path]) -> str:
    docs = []
    for p in paths:
        doc = json.loads(p.read_text())
        # Recompute the summary from the rows (its grouping may be newer than the run); keep the run's facts.
        fresh = summarize(doc["rows"], doc.get("non_elf"))
        fresh["non_elf_skipped"] = doc["summary"].get("non_elf_skipped", fresh["non_elf_skipped"])
        doc["summary"] = {**doc["summary"], **fresh}
        docs.append((doc["summary"].get("title") or p.parent.name, doc))
    out = gate_table(docs) + [""]
    for title, doc in docs:
        out.append(render_group(title, doc))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bindir", default="/usr/bin")
    ap.add_argument("--out", type=Path, help="results: sweep.json, failures/NAME/ (hardened file, report)")
    ap.add_argument(
        "--render",
        type=Path,
        nargs="+",
        help="print the markdown tables of existing sweep.json / libs.json / wheels.json files and exit",
    )
    ap.add_argument("--jobs", type=int, default=jobs())
    ap.add_argument("--only", default="", help="comma-separated names (default: every ELF file)")
    ap.add_argument(
        "--isolate", action="store_true", help="own PID/network/UTS/IPC namespaces for every run (/usr/sbin)"
    )
    ap.add_argument(
        "--skip-files-of",
        action="append",
        default=[],
        metavar="DIR",
        help="leave out files that are the same file as an ELF file of DIR (already swept there)",
    )
    ap.add_argument("--title", help="group title in the summary (default: the bindir)")
    args = ap.parse_args(argv)
    if args.render:
        print(render_all(args.render), end="")
        return 0
    if args.out is None:
        ap.error("--out is required")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    skip: dict[tuple[int, int], str] = {}
    for other in args.skip_files_of:
        skip.update(file_keys(other))
    skipped: dict[str, str] = {}
    items, non_elf = collect(args.bindir, skip, skipped)
    if args.only:
        wanted = set(args.only.split(","))
        items = [i for i in items if wanted & set(i.aliases)]
    t0 = time.monotonic()
    done = 0

    def progress(row: dict) -> None:
        nonlocal done
        done += 1
        extra = row.get("cause") or row.get("reason") or ""
        secs = (row.get("harden") or {}).get("seconds", "")
        print(f"[{done}/{len(items)}] {row['name']}: {row['outcome']} {extra} ({secs} s)"[:240], flush=True)

    rows = sweep(
        items,
        out / "work",
        args.jobs,
        keep_failures=out / "failures",
        progress=progress,
        isolate=args.isolate,
    )
    summary = summarize(rows, non_elf)
    summary["title"] = args.title or args.bindir
    summary["seconds"] = round(time.monotonic() - t0)
    summary["bind_mount"] = bind_mount_works()
    summary["isolated"] = args.isolate
    summary["same_file_as_other_dir"] = skipped
    if skipped:
        summary["note"] = (
            f"{len(skipped)} more ELF entries are the same file as one already swept in "
            f"{', '.join(args.skip_files_of)} and are counted there: "
            + ", ".join(f"`{n}`" for n in sorted(skipped))
            + "."
        )
    write_json(out / "sweep.json", {"summary": summary, "rows": rows, "non_elf": non_elf})
    print(json.dumps({k: v for k, v in summary.items() if k != "coverage"}, indent=1)[:20000])
    return 0 if not (summary["outcomes"].get("failed") or summary["outcomes"].get("not verified")) else 1


if __name__ == "__main__":
    sys.exit(main())
