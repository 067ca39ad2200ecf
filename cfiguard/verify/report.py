"""Verifier output: text (one line per finding), versioned JSON, and SARIF 2.1.0.

Kept apart from the checks so that the formats can be read (and their schema documented in docs/verifier.md)
without reading the verifier.
"""

from __future__ import annotations

import json
from pathlib import Path

from cfiguard.verify.checker import CHECKS, Finding, Result

JSON_SCHEMA = "cfiguard-verify"
JSON_VERSION = 1
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def _hex(a: int | None) -> str:
    return "-" if a is None else f"{a:#x}"


def status(r: Result) -> str:
    return "unusable" if r.error is not None else "verified" if r.ok else "failed"


def text(results: list[Result]) -> str:
    """`FILE: ADDRESS: CHECK: REASON`, one line per finding; nothing for a file that verifies."""
    lines = [f"{r.path}: {_hex(f.address)}: {f.check}: {f.reason}" for r in results for f in r.findings]
    lines += [
        f"{r.path}: {_hex(w.address)}: warning: {w.check}: {w.reason}" for r in results for w in r.warnings
    ]
    return "".join(line + "\n" for line in lines)


def to_json(results: list[Result], version: str) -> dict:
    def finding(f: Finding) -> dict:
        hx = None if f.address is None else _hex(f.address)
        return {"check": f.check, "address": f.address, "address_hex": hx, "reason": f.reason}

    files = [
        {
            "path": r.path,
            "status": status(r),
            "error": r.error,
            "stats": r.stats,
            "findings": list(map(finding, r.findings)),
            "warnings": list(map(finding, r.warnings)),
        }
        for r in results
    ]
    tool = {"name": "cfiguard", "version": version}
    return {
        "schema": JSON_SCHEMA,
        "version": JSON_VERSION,
        "tool": tool,
        "ok": all(r.ok for r in results),
        "files": files,
    }


def to_sarif(results: list[Result], version: str) -> dict:
    """A minimal valid SARIF 2.1.0 log: one run, one rule per check, one result per finding."""
    rule_ids = list(CHECKS)
    out = []
    for r in results:
        uri = Path(r.path).resolve().as_uri() if r.path else r.path
        for f, level in [(f, "error") for f in r.findings] + [(w, "warning") for w in r.warnings]:
            loc: dict = {"physicalLocation": {"artifactLocation": {"uri": uri}}}
            if f.address is not None:
                loc["physicalLocation"]["address"] = {"absoluteAddress": f.address}
                loc["logicalLocations"] = [
                    {"name": _hex(f.address), "fullyQualifiedName": f"{r.path}@{_hex(f.address)}"}
                ]
            out.append(
                {
                    "ruleId": f.check,
                    "ruleIndex": rule_ids.index(f.check),
                    "level": level,
                    "message": {"text": f.reason},
                    "locations": [loc],
                }
            )
    notifications = [
        {"level": "error", "message": {"text": f"{r.path}: {r.error}"}}
        for r in results
        if r.error is not None
    ]
    return {
        "version": "2.1.0",
        "$schema": SARIF_SCHEMA,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "cfiguard-verify",
                        "version": version,
                        "rules": [
                            {"id": k, "name": k, "shortDescription": {"text": v}} for k, v in CHECKS.items()
                        ],
                    }
                },
                "invocations": [
                    {"executionSuccessful": not notifications, "toolExecutionNotifications": notifications}
                ],
                "results": out,
            }
        ],
    }


def render(results: list[Result], fmt: str, version: str) -> str:
    if fmt == "text":
        return text(results)
    doc = to_json(results, version) if fmt == "json" else to_sarif(results, version)
    return json.dumps(doc, indent=2) + "\n"
