"""The benchmark suite, one command:

    python -m benchmarks.run [--quick] [--pairs N] [--out DIR] [--only GROUPS] [--nice N] [--largest PATH]

writes DIR/results.json (every measurement, every per-pair ratio) and DIR/results.md (the tables).

--quick is CI's smoke run: the C micro-benchmark only, one pair, its hardening and verification, and its
callgrind counts if valgrind is installed; well under a minute. Without --quick: every runtime workload of
docs/performance.md, the rewrite cost of /usr/bin/python3.11, libpython and the largest ELF file on the
machine, and the dynamic counts.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks import dyncount, elfinfo, rewrite, workloads
from benchmarks.measure import geomean
from benchmarks.report import render
from benchmarks.runtime import Runner
from benchmarks.workloads import Preparer, base_env

GROUPS = ("micro", "cxx", "libpython", "debian-python", "sqlite", "compressors")


def machine_info() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "loadavg_at_start": os.getloadavg(),
    }


def cfiguard_revision() -> str:
    """The commit the measured cfiguard comes from, '+dirty' if cfiguard/ has uncommitted changes: the tree
    moves quickly, so a number without its revision is not reproducible."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "cfiguard"], cwd=root, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return (
        head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
        if head.returncode == 0
        else "unknown"
    )


def find_largest_elf() -> str | None:
    """Largest file (by executable-segment bytes) among /usr/bin and /usr/lib/x86_64-linux-gnu/*.so*."""
    best, best_code = None, -1
    seen = set()
    for p in glob.glob("/usr/bin/*") + glob.glob("/usr/lib/x86_64-linux-gnu/*.so*"):
        rp = os.path.realpath(p)
        if rp in seen or not os.path.isfile(rp):
            continue
        seen.add(rp)
        if not elfinfo.is_elf_with_code(rp):
            continue
        code = elfinfo.code_bytes(rp)
        if code > best_code:
            best, best_code = rp, code
    return best


def summarise_runtime(results: list) -> dict:
    """Geometric means: all real workloads (everything but the micro-benchmark), per group, and the mean of
    the group means (so that 13 Python benchmarks do not outweigh one sqlite session)."""
    ok = [r for r in results if r.ok and r.stats]
    real = [r for r in ok if r.group != "C micro"]
    groups = []

    def add(scope: str, rs: list) -> None:
        if rs:
            worst = max(rs, key=lambda r: r.stats.median_ratio)
            groups.append(
                {
                    "scope": scope,
                    "count": len(rs),
                    "geomean": geomean([r.stats.median_ratio for r in rs]),
                    "worst_name": f"{worst.group}: {worst.name}",
                    "worst_ratio": worst.stats.median_ratio,
                }
            )

    add("all real workloads (micro excluded)", real)
    names = sorted({r.group for r in ok}, key=lambda g: [r.group for r in ok].index(g))
    per_group = []
    for g in names:
        rs = [r for r in ok if r.group == g]
        add(g, rs)
        if g != "C micro":
            per_group.append(geomean([r.stats.median_ratio for r in rs]))
    summary = {"groups": groups}
    if per_group:
        summary["geomean_of_groups"] = geomean(per_group)
        groups.insert(
            1,
            {
                "scope": "mean of the real groups' geomeans",
                "count": len(per_group),
                "geomean": summary["geomean_of_groups"],
            },
        )
    if real:
        summary["geomean_real"] = geomean([r.stats.median_ratio for r in real])
        summary["worst_real"] = max(r.stats.median_ratio for r in real)
    return summary


def evaluate_targets(res: dict) -> list[dict]:
    """The issue's targets, each marked met / missed / not measured."""
    out = []
    s = res.get("summary", {})

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "MISSED")

    g = s.get("geomean_real")
    real = [r for r in res["runtime"] if r["ok"] and r["stats"] and r["group"] != "C micro"]
    out.append(
        {
            "target": "geometric-mean runtime overhead <= 5% (stretch 3%)",
            "measured": "n/a" if g is None else f"{(g - 1) * 100:+.1f}% over {len(real)} real workloads",
            "verdict": verdict(None if g is None else g <= 1.05)
            + ("" if g is None or g > 1.03 else " (stretch met)"),
        }
    )
    w = s.get("worst_real")
    over = sum(1 for r in real if r["stats"]["median_ratio"] > 1.10)
    out.append(
        {
            "target": "no single real workload over 10%",
            "measured": "n/a"
            if w is None
            else f"worst {(w - 1) * 100:+.1f}%; {over} of {len(real)} over 10%",
            "verdict": verdict(None if w is None else w <= 1.10),
        }
    )
    py = [r for r in res["rewrite"] if r["action"] == "harden" and r["input"].endswith("/python3.11")]
    if py:
        r = py[0]
        out.append(
            {
                "target": "harden /usr/bin/python3.11 in <= 5 s",
                "measured": f"{r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU"
                + ("" if r["ok"] else " (failed)"),
                "verdict": verdict(r["ok"] and r["wall"] <= 5.0)
                + (" (CPU time alone would meet it)" if r["wall"] > 5.0 >= r["cpu"] else ""),
            }
        )
    lg = [r for r in res["rewrite"] if r["action"] == "harden" and r["input"] == res.get("largest")]
    if lg:
        r = lg[0]
        out.append(
            {
                "target": ">= 1 MB of code per second on the largest binary",
                "measured": f"{r['mb_per_s_wall']:.2f} MB/s wall, {r['mb_per_s_cpu']:.2f} MB/s CPU"
                + ("" if r["ok"] else f" (failed: exit {r['returncode']})"),
                "verdict": verdict(r["ok"] and r["mb_per_s_wall"] >= 1.0),
            }
        )
    named = [
        r for r in res["rewrite"] if r["action"] == "harden" and r["input"] in res.get("named_binaries", [])
    ]
    if named:
        worst = max(named, key=lambda r: r["rss_over_input"])
        out.append(
            {
                "target": "peak RSS <= 10x the input size",
                "measured": f"worst {worst['rss_over_input']:.1f}x ({os.path.basename(worst['input'])}, "
                f"{worst['maxrss_kib'] / 1024:.0f} MB for {worst['input_bytes'] / 1e6:.1f} MB)",
                "verdict": verdict(worst["rss_over_input"] <= 10.0),
            }
        )
    return out


@dataclass
class DynCase:
    """One hardened file profiled on one workload: the command of each side takes the size as last argument."""

    label: str
    orig_file: Path
    hard_file: Path
    argv: Callable[[str], list[str]]  # side -> argv without the size
    env: Callable[[str], dict]
    callgrind_n: str
    perf_n: str


def dyn_cases(w: Path) -> list[DynCase]:
    bm = str(workloads.BM_SCRIPT)
    interp = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    env = base_env()
    lib = next(iter(sorted((w / "libpython/orig").glob("libpython*"))), None)
    cases = [
        DynCase("micro_icall", w / "micro/orig/micro_icall", w / "micro/hard/micro_icall",
                lambda s: [str(w / f"micro/{s}/micro_icall")], lambda s: env, "1", "100"),
        DynCase("vcall_exc", w / "cxx/orig/vcall_exc", w / "cxx/hard/vcall_exc",
                lambda s: [str(w / f"cxx/{s}/vcall_exc")], lambda s: env, "1", "30"),
        DynCase("python3.11 (Debian) bm.py richards", w / "debian-python/orig/python3.11",
                w / "debian-python/hard/python3.11",
                lambda s: [str(w / f"debian-python/{s}/python3.11"), "-I", bm, "richards"], lambda s: env, "1", "14"),
    ]  # fmt: skip
    if lib is not None:
        cases.append(
            DynCase(f"{os.path.basename(interp)} + {lib.name} bm.py richards", lib, w / "libpython/hard" / lib.name,
                    lambda s: [interp, "-I", bm, "richards"],
                    lambda s: {**env, "LD_LIBRARY_PATH": str(w / "libpython" / s)}, "1", "14")
        )  # fmt: skip
    return [c for c in cases if c.orig_file.exists() and c.hard_file.exists()]


def run_dyncounts(pre: Preparer, args: argparse.Namespace, log) -> dict:
    """callgrind counts on the micro-benchmark (full mode: also the C++ program, Debian's python3.11 and
    libpython on richards); perf cpu-clock samples of the same hardened files in full mode."""
    out: dict = {"callgrind": [], "perf": []}
    cases = dyn_cases(pre.work)
    if args.quick:
        cases = cases[:1]
    for c in cases:
        log(f"callgrind: {c.label}")
        out["callgrind"].append(
            dyncount.callgrind_profile(
                c.label,
                [*c.argv("orig"), c.callgrind_n],
                [*c.argv("hard"), c.callgrind_n],
                c.env("orig"),
                c.env("hard"),
                str(c.orig_file),
                str(c.hard_file),
                pre.work,
                args.timeout,
            )  # fmt: skip
        )
    if not args.quick and dyncount.perf_available():
        for c in cases:
            log(f"perf: {c.label}")
            out["perf"].append(
                dyncount.perf_profile(
                    c.label,
                    [*c.argv("hard"), c.perf_n],
                    c.env("hard"),
                    str(c.orig_file),
                    str(c.hard_file),
                    pre.work,
                    args.timeout,
                )  # fmt: skip
            )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke run: micro-benchmark only, 1 pair")
    ap.add_argument(
        "--pairs", type=int, default=None, help="interleaved pairs per workload (default 5, quick 1)"
    )
    ap.add_argument("--out", default="out/benchmarks", help="output directory (default out/benchmarks)")
    ap.add_argument(
        "--only", default=",".join(GROUPS), help=f"comma-separated groups among {','.join(GROUPS)}"
    )
    ap.add_argument("--target-seconds", type=float, default=None, help="CPU time of one run (default 0.8)")
    ap.add_argument("--nice", type=int, default=0, help="niceness added to every measured child")
    ap.add_argument("--timeout", type=float, default=1800, help="timeout of any one child, seconds")
    ap.add_argument("--largest", default=None, help="largest ELF to harden (default: found on the machine)")
    ap.add_argument("--no-largest", action="store_true", help="skip hardening the largest ELF")
    ap.add_argument("--no-dyncount", action="store_true", help="skip callgrind and perf")
    ap.add_argument(
        "--no-runtime", action="store_true", help="skip the runtime pairs (prepare, counts, rewrite)"
    )
    ap.add_argument("--corpus-mb", type=float, default=6.0, help="compressor corpus size (MB)")
    ap.add_argument("--sql-orders", type=int, default=200_000, help="INSERTs of the sqlite session")
    args = ap.parse_args(argv)
    pairs = args.pairs or (1 if args.quick else 5)
    target = args.target_seconds or (0.15 if args.quick else 0.8)
    only = {"micro"} if args.quick else set(args.only.split(","))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    res: dict = {
        "format": 1,
        "command": " ".join(["python -m benchmarks.run", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "pairs": pairs,
        "target_seconds": target,
        "machine": machine_info(),
        "cfiguard_revision": cfiguard_revision(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    pre = Preparer(out / "work", args.nice, args.timeout)
    steps = [
        ("micro", workloads.prepare_micro),
        ("cxx", workloads.prepare_cxx),
        ("libpython", workloads.prepare_libpython),
        ("debian-python", workloads.prepare_debian_python),
        ("sqlite", lambda p: workloads.prepare_sqlite(p, args.sql_orders)),
        ("compressors", lambda p: workloads.prepare_compressors(p, int(args.corpus_mb * 1e6))),
    ]
    for group, prep in steps:
        if group in only:
            log(f"prepare {group}")
            prep(pre)
    runner = Runner(out / "work", args.nice, args.timeout)
    results = []
    for w in [] if args.no_runtime else pre.setup.workloads:
        log(f"runtime {w.group}: {w.name}")
        r = runner.measure(w, pairs, target)
        if r.ok:
            log(
                f"  n={r.n} ratio {r.stats.median_ratio:.3f} ({r.stats.min_ratio:.3f}-{r.stats.max_ratio:.3f})"
            )
        else:
            log(f"  FAILED: {r.error}")
        results.append(r)
    res["runtime"] = [r.as_dict() for r in results]
    res["skipped"] = pre.setup.skipped
    res["summary"] = summarise_runtime(results)

    res["dyncount"] = {} if args.no_dyncount else run_dyncounts(pre, args, log)

    rewrites = list(pre.setup.rewrites)
    named = [str(out / "work/debian-python/orig/python3.11")]
    libpy = [r.input for r in rewrites if "libpython" in os.path.basename(r.input)]
    named += libpy
    largest = None
    if not args.quick and not args.no_largest:
        largest = args.largest or find_largest_elf()
        if largest:
            log(f"harden largest: {largest} ({elfinfo.code_bytes(largest) / 1e6:.1f} MB code)")
            dst = str(out / "work" / (os.path.basename(largest) + ".cfi"))
            rewrites.append(
                rewrite.harden(largest, dst, dst + ".report.json", timeout=args.timeout, nice=args.nice)
            )
            named.append(largest)
    # harden checks its own output by default: the same files once more without that check, side by side
    for src in named[:1]:
        log(f"harden --no-verify {src}")
        dst = str(out / "work" / (os.path.basename(src) + ".noverify.cfi"))
        rewrites.append(
            rewrite.harden(
                src, dst, dst + ".report.json", timeout=args.timeout, nice=args.nice, self_check=False
            )
        )
    if rewrite.verify_available():
        to_verify = [
            r for r in rewrites if r.ok and r.action == "harden" and (args.quick or r.input in named)
        ]
        for r in to_verify:
            log(f"verify {r.output}")
            rewrites.append(rewrite.verify(r.output, r.input, timeout=args.timeout, nice=args.nice))
    else:
        res["verify"] = "cfiguard verify is not available in this checkout"
    res["rewrite"] = [r.as_dict() for r in rewrites]
    res["largest"] = largest
    res["named_binaries"] = named
    res["targets"] = evaluate_targets(res)
    res["seconds"] = time.monotonic() - t0
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "results.md").write_text(render(res))
    log(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
