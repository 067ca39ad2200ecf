"""JSON report of a harden run: every site with its outcome, and every function left in place with why."""

from __future__ import annotations

import json

REPORT_FORMAT = 1


def harden_report(result) -> dict:
    return {
        "format": REPORT_FORMAT,
        "tool": "cfiguard",
        "input": result.input,
        "output": result.output,
        "counts": result.counts,
        "functions": {"found": result.functions, "relocated": result.relocated},
        "seconds": round(result.seconds, 3),
        "verification": {
            "verified": result.verified,  # null: not checked (--no-verify)
            "seconds": round(result.verify_seconds, 3),
            "switches_guarded_for_the_verifier": result.demoted,
            "findings": [
                {"check": f.check, "address": f.address, "reason": f.reason} for f in result.findings
            ],
        },
        "sites": [
            {
                "address": s.addr,
                "kind": s.kind,
                "outcome": s.outcome,
                "method": s.method,
                "reason": s.reason,
                **({"precision_lost": s.precision} if s.precision else {}),
            }
            for s in result.sites
        ],
        "functions_not_relocated": [
            {"address": a, "name": n, "reason": r} for a, n, r in result.not_relocated
        ],
    }


def write_json(path: str, doc: dict) -> None:
    from cfiguard.rewrite.writer import write_atomically

    write_atomically(path, (json.dumps(doc, indent=1) + "\n").encode(), 0o644)


def summary_line(result) -> str:
    c = result.counts
    return (
        f"cfiguard: {result.input}: {c['found']} sites, {c['guarded']} guarded, {c['safe']} proven safe, "
        f"{c['unguarded']} unguarded; {result.relocated}/{result.functions} functions relocated "
        f"in {result.seconds:.2f}s"
        + ("" if result.verified is None else f"; verified in {result.verify_seconds:.2f}s")
    )
