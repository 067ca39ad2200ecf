"""/usr/bin, hardened program by program (see rw_sweep.py for the comparison and the classification).

- test_fast_sweep: fast, runs in CI: about 20 common programs with a functional invocation each.
- test_full_sweep: `realworld` (CFIGUARD_REALWORLD=1): every ELF file of /usr/bin (or the /usr/bin names in
  CFIGUARD_SWEEP_ONLY=a,b,...); writes sweep.json (the table of docs/compatibility.md) to
  CFIGUARD_REALWORLD_OUT or the test's temp dir, and fails if any program failed (a refusal with a clear
  reason is not a failure).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from rw_support import jobs, out_dir, write_json
from rw_sweep import FAST, collect, summarize, sweep

BINDIR = "/usr/bin"


def _describe(row: dict) -> str:
    d = row.get("detail") or {}
    parts = [
        f"{row['name']} ({row.get('real')}): {row.get('cause') or row['outcome']}: {row.get('reason', '')}"
    ]
    if "args" in row:
        parts.append(f"  args {row['args']}, exit codes original/hardened {row.get('rc')}")
    for k in ("stdout", "stderr"):
        if d.get(k) and d[k] != "same":
            parts.append(f"  {k}: {d[k]}")
    if d.get("hardened_stderr"):
        parts.append(f"  hardened stderr: {d['hardened_stderr'][:600]}")
    if row.get("stderr"):
        parts.append(f"  harden stderr: {row['stderr'][-1500:]}")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def fast_rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    items, _ = collect(BINDIR)
    wanted = [i for i in items if set(i.aliases) & set(FAST)]
    work = tmp_path_factory.mktemp("usr-bin-fast")
    rows = sweep(wanted, work, njobs=2, keep_failures=work / "failures")
    out = {}
    for item, row in zip(wanted, rows, strict=True):
        for alias in item.aliases:
            out[alias] = row
    return out


@pytest.mark.parametrize("name", FAST)
def test_fast_sweep(name: str, fast_rows: dict[str, dict]) -> None:
    if name not in fast_rows:
        pytest.skip(f"{BINDIR}/{name} is not an ELF file on this machine")
    row = fast_rows[name]
    assert row["outcome"] == "identical", _describe(row)
    c = row["counts"]
    assert c["found"] == c["guarded"] + c["safe"] + c["unguarded"]


@pytest.mark.realworld
def test_full_sweep(tmp_path: Path) -> None:
    out = out_dir(tmp_path) / "usr-bin"
    out.mkdir(parents=True, exist_ok=True)
    items, non_elf = collect(BINDIR)
    only = {n for n in os.environ.get("CFIGUARD_SWEEP_ONLY", "").split(",") if n}
    if only:
        items = [i for i in items if only & set(i.aliases)]
    rows = sweep(items, out / "work", njobs=jobs(), keep_failures=out / "failures")
    summary = summarize(rows, non_elf)
    write_json(out / "sweep.json", {"summary": summary, "rows": rows, "non_elf": non_elf})
    print(json.dumps(summary, indent=1))
    failed = [r for r in rows if r["outcome"] == "failed"]
    refused_unclear = [r for r in rows if r["outcome"] == "refused" and not r.get("reason")]
    assert not refused_unclear, [r["name"] for r in refused_unclear]
    assert not failed, (
        f"{len(failed)} of {len(rows)} programs failed (details in {out}/sweep.json):\n"
        + "\n".join(_describe(r) for r in failed)
    )
