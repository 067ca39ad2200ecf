"""Every sample flavour behaves the same before and after ``cfiguard harden``.

Flavour selection (default subset vs ``CFIGUARD_FULL_MATRIX=1``) is described in e2e_support.py.
The first two tests check the samples themselves and need no rewriter.
"""

from __future__ import annotations

import pytest
from e2e_support import VIOLATION, check_report, describe_run, flavours_of, output_diff, run_binary


def test_original_is_deterministic(flavour, binary):
    path = binary(flavour)
    first, second = run_binary(path), run_binary(path)
    assert first.stdout, describe_run(first)
    assert first.returncode == second.returncode, (describe_run(first), describe_run(second))
    assert first.stdout == second.stdout, output_diff(first.stdout, second.stdout)
    assert first.stderr == second.stderr


def test_flavours_agree(program, binary):
    """All selected flavours of a program (attack demos in normal mode) print the same."""
    results = {}
    for name in flavours_of(program):
        try:
            path = binary(name)
        except pytest.skip.Exception:  # a clang flavour without clang
            continue
        p = run_binary(path)
        results[name] = (p.returncode, p.stdout, p.stderr)
    if not results:
        pytest.skip("no flavour of this program was built")
    ref_name, ref = next(iter(results.items()))
    for name, res in results.items():
        assert res == ref, (
            f"{name} differs from {ref_name} (exit {res[0]} vs {ref[0]}):\n{output_diff(ref[1], res[1])}"
        )


@pytest.mark.slow
def test_hardened_matches_original(flavour, binary, hardened):
    original = run_binary(binary(flavour))
    h = hardened(flavour)
    path = h.require()
    check_report(h.report())
    result = run_binary(path)
    assert VIOLATION not in result.stderr, describe_run(result)
    assert result.stdout == original.stdout, output_diff(original.stdout, result.stdout)
    assert result.returncode == original.returncode, describe_run(result)


@pytest.mark.slow
def test_hardened_sample_verifies(flavour, hardened):
    """Issue acceptance: every hardened sample passes the independent verifier."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    path = hardened(flavour).require()
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(repo))
    proc = subprocess.run(
        [sys.executable, "-m", "cfiguard.cli", "verify", str(path)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
