"""The attack demos hijack the original binaries and are stopped by the hardened ones.

Each demo (samples/attack_*.c, attack_vtable.cpp) takes one argument in attack mode: the hex
offset sym(win) - sym(ref), read with nm from the unstripped build of the same flavour. win()
is never address-taken, prints HIJACKED and exits 42. Without an argument the demo runs
normally and exits 0.

Flavour selection (default subset vs ``CFIGUARD_FULL_MATRIX=1``) is described in e2e_support.py.
"""

from __future__ import annotations

import signal

import pytest
from e2e_support import (
    VIOLATION,
    check_report,
    describe_run,
    output_diff,
    run_binary,
    symbol_offset,
    unstripped,
)


@pytest.fixture
def offset(attack_flavour, binary) -> str:
    return symbol_offset(binary(unstripped(attack_flavour)))


def test_attack_succeeds_on_original(attack_flavour, binary, offset):
    result = run_binary(binary(attack_flavour), offset)
    assert b"HIJACKED" in result.stdout, describe_run(result)
    assert result.returncode == 42, describe_run(result)


def test_normal_mode_on_original(attack_flavour, binary):
    result = run_binary(binary(attack_flavour))
    assert result.returncode == 0, describe_run(result)
    assert b"HIJACKED" not in result.stdout
    assert b"after:" in result.stdout, describe_run(result)


@pytest.mark.slow
def test_attack_blocked_after_hardening(attack_flavour, hardened, offset):
    h = hardened(attack_flavour)
    result = run_binary(h.require(), offset)
    assert b"HIJACKED" not in result.stdout, describe_run(result)
    assert VIOLATION in result.stderr, describe_run(result)
    assert result.returncode == -signal.SIGABRT, describe_run(result)


@pytest.mark.slow
def test_normal_mode_preserved_after_hardening(attack_flavour, binary, hardened):
    original = run_binary(binary(attack_flavour))
    h = hardened(attack_flavour)
    path = h.require()
    check_report(h.report())
    result = run_binary(path)
    assert VIOLATION not in result.stderr, describe_run(result)
    assert result.stdout == original.stdout, output_diff(original.stdout, result.stdout)
    assert result.returncode == original.returncode == 0, describe_run(result)
