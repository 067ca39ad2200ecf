"""CI's only benchmark check: `python -m benchmarks.run --quick` runs end to end and writes sane results.

Why a smoke test and not a performance assertion: CI shares a noisy 2-core machine, so a threshold on ratios
would be flaky; what must not rot is the machinery (build, harden, interleaved runs, rewrite cost, the
optional callgrind counts, the JSON and Markdown writers). The numbers themselves are recorded by a full run
in docs/performance.md.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None, reason="the micro-benchmark is compiled with gcc"
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, float]:
    out = tmp_path_factory.mktemp("bench")
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text(), elapsed


def test_quick_run_is_quick(quick_run: tuple[dict, str, float]) -> None:
    # The brief is < 60 s; allow slack for a loaded CI machine, but catch a quick mode that grew into a full run.
    assert quick_run[2] < 120


def test_runtime_result_is_sane(quick_run: tuple[dict, str, float]) -> None:
    res = quick_run[0]
    assert res["quick"] is True and res["pairs"] == 1
    assert res["machine"]["nproc"] >= 1
    (micro,) = res["runtime"]
    assert micro["ok"], micro["error"]
    s = micro["stats"]
    assert s["pairs"] == 1 and len(s["ratios"]) == 1
    for key in ("median_ratio", "min_ratio", "max_ratio", "q1_ratio", "q3_ratio", "wall_median_ratio"):
        assert 0 < s[key] < 100, (key, s[key])
    assert s["orig_cpu_median"] > 0 and s["hard_cpu_median"] > 0
    assert res["summary"]["groups"][0]["geomean"] > 0


def test_rewrite_cost_is_recorded(quick_run: tuple[dict, str, float]) -> None:
    harden = [r for r in quick_run[0]["rewrite"] if r["action"] == "harden"]
    assert harden and harden[0]["ok"]
    r = harden[0]
    assert r["wall"] > 0 and r["maxrss_kib"] > 0 and r["code_bytes"] > 0
    assert r["sites"]["found"] == r["sites"]["guarded"] + r["sites"]["safe"] + r["sites"]["unguarded"] > 0


def test_dynamic_counts_when_valgrind_present(quick_run: tuple[dict, str, float]) -> None:
    cg = quick_run[0]["dyncount"]["callgrind"]
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind not installed")
    (d,) = cg
    assert d["ok"], d.get("error")
    assert d["guard_kinds"]["ret"]["executions"] > 0 and d["guard_kinds"]["call"]["executions"] > 0
    assert 0 < d["guard_share_of_all"] < 1
    assert d["instruction_ratio"] > 1


def test_markdown_has_the_tables(quick_run: tuple[dict, str, float]) -> None:
    md = quick_run[1]
    for heading in ("## Runtime, per workload", "## Rewrite cost", "## Dynamic counts", "micro_icall"):
        assert heading in md
