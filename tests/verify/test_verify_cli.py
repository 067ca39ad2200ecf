"""The `cfiguard verify` command: exit codes, the three report formats, and robustness on corrupt input."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mutants import Built, run_cli
from typer.testing import CliRunner

from cfiguard.cli import app
from cfiguard.verify import CHECKS

LINE = re.compile(r"^(?P<file>.+): (?P<addr>0x[0-9a-f]+|-): (?P<check>[a-z-]+): (?P<reason>.+)$")


def elf_with(tmp_path: Path, src: Path, offset: int, value: bytes) -> Path:
    data = bytearray(src.read_bytes())
    data[offset : offset + len(value)] = value
    out = tmp_path / f"patched-{offset}"
    out.write_bytes(bytes(data))
    return out


def test_unusable_inputs_exit_2(builds: dict[str, Built], tmp_path: Path) -> None:
    hardened = builds["pie"].hardened
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    cases = {
        "missing": tmp_path / "missing",
        "directory": tmp_path,
        "not ELF": text,
        "empty": tmp_path / "empty",
        "32-bit": elf_with(tmp_path, hardened, 4, b"\x01"),
        "AArch64": elf_with(tmp_path, hardened, 18, b"\xb7\x00"),
    }
    cases["empty"].write_bytes(b"")
    for what, path in cases.items():
        p = run_cli("verify", path)
        assert p.returncode == 2, what
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cfiguard: error: "), (what, p.stderr)
        assert p.stdout == "", what


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a mode-000 file")
def test_unreadable_input_exit_2(builds: dict[str, Built], tmp_path: Path) -> None:
    f = tmp_path / "locked"
    f.write_bytes(builds["pie"].hardened.read_bytes())
    f.chmod(0)
    assert run_cli("verify", f).returncode == 2


def test_exit_code_of_several_files(builds: dict[str, Built], tmp_path: Path) -> None:
    good, plain = builds["pie"].hardened, builds["pie"].plain
    assert run_cli("verify", good, builds["nopie"].hardened).returncode == 0
    assert run_cli("verify", good, plain).returncode == 1
    assert run_cli("verify", good, plain, tmp_path / "missing").returncode == 2


def test_text_format(builds: dict[str, Built]) -> None:
    plain = builds["nopie"].plain
    p = run_cli("verify", plain)
    lines = p.stdout.splitlines()
    assert lines and all(LINE.match(line) for line in lines), p.stdout
    m = LINE.match(lines[0])
    assert m["file"] == str(plain) and m["check"] == "manifest" and "not hardened" in m["reason"]
    assert run_cli("verify", builds["nopie"].hardened).stdout == ""


def test_json_format(builds: dict[str, Built], tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    p = run_cli(
        "verify",
        builds["pie"].hardened,
        builds["pie"].plain,
        tmp_path / "nope",
        "--format",
        "json",
        "-o",
        report,
    )
    assert p.returncode == 2 and p.stdout == ""
    doc = json.loads(report.read_text())
    assert doc["schema"] == "cfiguard-verify" and doc["version"] == 1 and doc["ok"] is False
    assert [f["status"] for f in doc["files"]] == ["verified", "failed", "unusable"]
    good, bad, unusable = doc["files"]
    assert good["findings"] == [] and good["error"] is None and good["stats"]["instructions"] > 0
    assert unusable["error"] and unusable["findings"] == []
    f = bad["findings"][0]
    assert set(f) == {"check", "address", "address_hex", "reason"} and f["check"] in CHECKS


def test_sarif_format(builds: dict[str, Built], tmp_path: Path) -> None:
    b = builds["nopie"]
    data = bytearray(b.hardened.read_bytes())
    mutant = tmp_path / "mutant"
    # Make every executable segment writable too: findings with addresses.
    phoff, phnum = int.from_bytes(data[0x20:0x28], "little"), int.from_bytes(data[0x38:0x3A], "little")
    for i in range(phnum):
        at = phoff + 56 * i
        if int.from_bytes(data[at : at + 4], "little") == 1 and data[at + 4] & 1:
            data[at + 4] |= 2
    mutant.write_bytes(bytes(data))
    p = run_cli("verify", mutant, "--format", "sarif")
    assert p.returncode == 1
    doc = json.loads(p.stdout)
    assert doc["version"] == "2.1.0" and doc["$schema"].endswith("sarif-2.1.0.json")
    run = doc["runs"][0]
    rules = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert run["tool"]["driver"]["name"] and set(rules) == set(CHECKS)
    assert run["results"]
    for r in run["results"]:
        assert r["ruleId"] in rules and rules[r["ruleIndex"]] == r["ruleId"] and r["level"] == "error"
        assert r["message"]["text"]
        phys = r["locations"][0]["physicalLocation"]
        assert phys["artifactLocation"]["uri"].startswith("file://")
        assert phys["address"]["absoluteAddress"] >= 0


def test_unknown_format_exit_2(builds: dict[str, Built]) -> None:
    p = run_cli("verify", builds["pie"].hardened, "--format", "xml")
    assert p.returncode == 2 and p.stderr.startswith("cfiguard: error:")


# ---------------------------------------------------------------------------------------------- fuzzing


@pytest.fixture(scope="module")
def fuzz_inputs(builds: dict[str, Built]) -> list[bytes]:
    return [builds[f].hardened.read_bytes() for f in sorted(builds)]


def _regions(data: bytes) -> list[tuple[int, int]]:
    """Byte ranges worth hitting: ELF header, program headers, section headers, manifest, whole file."""
    phoff, phnum = int.from_bytes(data[0x20:0x28], "little"), int.from_bytes(data[0x38:0x3A], "little")
    shoff = int.from_bytes(data[0x28:0x30], "little")
    man = data.rfind(b"CFIGUARD")
    return [(0, 64), (phoff, phoff + 56 * phnum), (shoff, len(data)), (man, man + 300), (0, len(data))]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.integers(0, 1),
    region=st.integers(0, 4),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=8),
    truncate=st.one_of(st.none(), st.floats(0, 1)),
)
def test_corrupt_files_never_crash(
    fuzz_inputs: list[bytes], tmp_path: Path, which: int, region: int, flips, truncate: float | None
) -> None:
    data = bytearray(fuzz_inputs[which])
    lo, hi = _regions(bytes(data))[region]
    hi = min(max(hi, lo + 1), len(data))
    for where, xor in flips:
        pos = min(lo + int(where * (hi - lo)), len(data) - 1)
        data[pos] ^= xor
    if truncate is not None:
        del data[int(truncate * len(data)) :]
    path = tmp_path / "fuzzed"
    path.write_bytes(bytes(data))
    result = CliRunner().invoke(app, ["verify", str(path), "--format", "json"])
    assert result.exit_code in (0, 1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert result.stderr.startswith("cfiguard: error: ")
    else:
        doc = json.loads(result.stdout)
        assert doc["files"][0]["status"] == ("verified" if result.exit_code == 0 else "failed")
        assert not any(f["check"] == "internal" for f in doc["files"][0]["findings"]), doc
