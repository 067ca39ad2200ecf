"""Markdown rendering of results.json: the tables docs/performance.md is built from.

Why a separate renderer: the JSON is the record (it keeps every per-pair ratio); the Markdown is derived from
it, so `python -m benchmarks.report results.json` can redo the tables without rerunning anything.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f}%"


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


def runtime_table(res: dict) -> list[str]:
    out = [
        "| group | workload | n | orig CPU s | hard CPU s | median ratio | overhead | min-max | IQR | wall ratio |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in res["runtime"]:
        s = r["stats"]
        if not r["ok"] or s is None:
            out.append(f"| {r['group']} | {r['name']} | {r['n']} | | | FAILED | | {r['error']} | | |")
            continue
        out.append(
            f"| {r['group']} | {r['name']} | {r['n']} | {s['orig_cpu_median']:.3f} | {s['hard_cpu_median']:.3f} "
            f"| {s['median_ratio']:.3f} | {_pct(s['median_ratio'])} | {s['min_ratio']:.3f}-{s['max_ratio']:.3f} "
            f"| {s['q1_ratio']:.3f}-{s['q3_ratio']:.3f} | {s['wall_median_ratio']:.3f} |"
        )
    return out


def summary_table(res: dict) -> list[str]:
    out = [
        "| scope | workloads | geometric mean ratio | overhead | worst workload |",
        "|---|---:|---:|---:|---|",
    ]
    for g in res.get("summary", {}).get("groups", []):
        worst = f"{g['worst_name']} ({_pct(g['worst_ratio'])})" if g.get("worst_name") else ""
        out.append(f"| {g['scope']} | {g['count']} | {g['geomean']:.3f} | {_pct(g['geomean'])} | {worst} |")
    for s in res.get("skipped", {}).items():
        out.append(f"| skipped: {s[0]} | | | | {s[1]} |")
    return out


def rewrite_table(res: dict) -> list[str]:
    out = [
        "| action | binary | file MB | code MB (exec segs) | .text MB | sites found/guarded/unguarded | wall s "
        "| CPU s | MB/s (wall) | MB/s (CPU) | peak RSS MB | RSS / file | status |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in res["rewrite"]:
        c = r.get("sites") or {}
        sites = (
            f"{c.get('found', '')}/{c.get('guarded', '')}/{c.get('unguarded', '')}"
            if r["action"].startswith("harden")
            else f"{c.get('findings', 0)} finding(s)"
        )
        status = "ok" if r["ok"] and r["returncode"] == 0 else f"exit {r['returncode']}: {r['summary'][:120]}"
        if r["action"] == "verify" and r["returncode"] == 1:
            status = "completed, did not verify (exit 1)"
        out.append(
            f"| {r['action']} | {r['input']} | {_mb(r['input_bytes'])} | {_mb(r['code_bytes'])} "
            f"| {_mb(r['text_bytes'])} | {sites} | {r['wall']:.2f} | {r['cpu']:.2f} | {r['mb_per_s_wall']:.2f} "
            f"| {r['mb_per_s_cpu']:.2f} | {r['maxrss_kib'] / 1024:.0f} | {r['rss_over_input']:.1f}x | {status} |"
        )
    return out


def dyn_tables(res: dict) -> list[str]:
    out: list[str] = []
    for d in res.get("dyncount", {}).get("callgrind", []):
        out.append(f"\n#### callgrind: {d['name']}\n")
        if not d.get("ok"):
            out.append(f"not measured: {d.get('error')}")
            continue
        ratio = d.get("instruction_ratio")
        out.append(
            f"Instructions executed: {d['total_instructions']:,} hardened"
            + (f" vs {d['orig_total_instructions']:,} original (x{ratio:.3f})" if ratio else "")
            + f"; in guards: {d['guard_instructions']:,} ({d['guard_share_of_all'] * 100:.1f}% of all); "
            f"forwarding-jump hops: {d['forwarding_hops']:,}; "
            f"guards not matched by any known template: {d.get('unrecognised_guards', 0)}.\n"
        )
        out += [
            "| guard kind | static guards | executions | label-table lookups | out-of-module exits | guard instructions |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for kind in ("ret", "ret_scratch", "call", "tailjmp", "preserve", "preserve_nf"):
            k = d["guard_kinds"].get(kind, {})
            out.append(
                f"| {kind} | {d['static_guards'].get(kind, 0)} | {k.get('executions', 0):,} "
                f"| {k.get('table_lookups', 0):,} | {k.get('out_of_module', 0):,} | {k.get('instructions', 0):,} |"
            )
        if d.get("top_guards"):
            out += [
                "",
                "| hottest guards (new address) | kind | guarded branch | executions |",
                "|---|---|---|---:|",
            ]
            out += [
                f"| {g['address']} | {g['kind']} | `{g['branch']}` | {g['executions']:,} |"
                for g in d["top_guards"][:8]
            ]
        if d["top_forwarding_hops"]:
            out += ["", "| hottest forwarding jumps (old address) | hops |", "|---|---:|"]
            out += [
                f"| {h['address']} `{h['name']}` | {h['count']:,} |" for h in d["top_forwarding_hops"][:8]
            ]
        out += ["", "| region of the hardened file | instructions |", "|---|---:|"]
        out += [f"| {k} | {v:,} |" for k, v in d["instructions_by_region"].items()]
    for p in res.get("dyncount", {}).get("perf", []):
        out.append(f"\n#### perf cpu-clock samples: {p['name']}\n")
        if not p.get("ok"):
            out.append(f"not measured: {p.get('error')}")
            continue
        out += [
            f"{p['samples']} samples; in guards {p['guard_share'] * 100:.1f}%.\n",
            "| region | share |",
            "|---|---:|",
        ]
        out += [f"| {k} | {v / p['samples'] * 100:.1f}% |" for k, v in p["regions"].items()]
        if p.get("hot_guard_instructions"):
            out += ["", "| guard instruction where samples landed | share of all samples |", "|---|---:|"]
            out += [
                f"| {k} | {v / p['samples'] * 100:.1f}% |" for k, v in p["hot_guard_instructions"].items()
            ]
    return out


def targets_table(res: dict) -> list[str]:
    out = ["| target | measured | verdict |", "|---|---|---|"]
    for t in res.get("targets", []):
        out.append(f"| {t['target']} | {t['measured']} | {t['verdict']} |")
    return out


def render(res: dict) -> str:
    m = res.get("machine", {})
    lines = [
        "# cfiguard benchmark results",
        "",
        f"Mode: {'quick' if res.get('quick') else 'full'}; pairs per workload: {res.get('pairs')}; "
        f"machine: {m.get('nproc')} CPUs, {m.get('cpu')}, kernel {m.get('kernel')}; "
        f"cfiguard {res.get('cfiguard_revision', 'unknown')}; "
        f"started {res.get('started')}, took {res.get('seconds', 0):.0f} s.",
        "",
        "Ratios are hardened / original user+sys CPU time of the child (wait4), per interleaved pair; "
        "the median over pairs is reported with the min-max and interquartile range of the per-pair ratios.",
        "",
        "## Targets",
        "",
        *targets_table(res),
        "",
        "## Runtime summary",
        "",
        *summary_table(res),
        "",
        "## Runtime, per workload",
        "",
        *runtime_table(res),
        "",
        "## Rewrite cost",
        "",
        *rewrite_table(res),
        "",
        "## Dynamic counts",
        *dyn_tables(res),
        "",
    ]
    return "\n".join(lines)


def compare(before: dict, after: dict) -> str:
    """Median ratios of two runs side by side (workloads matched by group and name): what an optimisation
    changed, with each run's spread so a difference inside the noise is visible as such."""
    old = {(r["group"], r["name"]): r for r in before["runtime"]}
    lines = [
        f"| workload | before ({before.get('cfiguard_revision') or before.get('started')}) | after ({after.get('cfiguard_revision') or after.get('started')}) |",
        "|---|---:|---:|",
    ]

    def cell(r: dict | None) -> str:
        if r is None:
            return "n/a"
        s = r.get("stats")
        return f"{s['median_ratio']:.3f} ({s['min_ratio']:.2f}-{s['max_ratio']:.2f})" if s else "FAILED"

    for r in after["runtime"]:
        lines.append(
            f"| {r['group'].split(' + ')[-1]}: {r['name']} | {cell(old.get((r['group'], r['name'])))} | {cell(r)} |"
        )
    for key in ("geomean_real", "geomean_of_groups"):
        b, a = before.get("summary", {}).get(key), after.get("summary", {}).get(key)
        lines.append(f"| **{key}** | {b or float('nan'):.3f} | {a or float('nan'):.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[2] == "--compare":
        print(compare(json.loads(Path(argv[1]).read_text()), json.loads(Path(argv[3]).read_text())))
        return 0
    if len(argv) != 2:
        print("usage: python -m benchmarks.report results.json [--compare after.json]", file=sys.stderr)
        return 2
    print(render(json.loads(Path(argv[1]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
