"""`cfiguard info`: the checksec-style summary read from the `.cfiguard` manifest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cfiguard

REPO = Path(__file__).resolve().parents[2]


def cfiguard_cli(*args, **extra: str) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ, PYTHONPATH=str(REPO), **extra)
    for k in ("CFIGUARD_CACHE", "SOURCE_DATE_EPOCH"):
        if k not in extra:
            e.pop(k, None)
    return subprocess.run(
        [sys.executable, "-m", "cfiguard.cli", *map(str, args)], capture_output=True, text=True, env=e
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("info")
    (d / "p.c").write_text(
        "#include <stdio.h>\nstatic int sq(int x) { return x * x; }\nint (*volatile op)(int) = sq;\n"
        'int main(void) { printf("%d\\n", op(7)); return 0; }\n'
    )
    subprocess.run(["gcc", "-O2", "-o", str(d / "plain"), str(d / "p.c")], check=True)
    p = cfiguard_cli("harden", d / "plain", "-o", d / "hardened", "--report", d / "report.json")
    assert p.returncode == 0, p.stderr
    p = cfiguard_cli("harden", d / "plain", "-o", d / "dated", SOURCE_DATE_EPOCH="1700000000")
    assert p.returncode == 0, p.stderr
    (d / "text").write_text("hello\n")
    return {k: d / k for k in ("plain", "hardened", "dated", "report.json", "text")}


def records(*paths: Path) -> tuple[int, list[dict]]:
    p = cfiguard_cli("info", "--format", "json", *paths)
    doc = json.loads(p.stdout)
    assert doc["schema"] == "cfiguard-info" and doc["version"] == 1
    return p.returncode, doc["files"]


def test_info_json_hardened_and_not(files) -> None:
    code, (hard, plain) = records(files["hardened"], files["plain"])
    assert code == 0
    report = json.loads(files["report.json"].read_text())
    assert hard["status"] == "hardened" and hard["hardened"] is True
    assert hard["tool_version"] == cfiguard.__version__ and hard["policy"] == "coarse"
    assert hard["coverage"] == report["counts"]  # the manifest records what harden reported
    assert hard["mode"] == "enforce" and hard["date"] is None and hard["manifest_format"] == 1
    assert plain["status"] == "not hardened" and plain["hardened"] is False and plain["coverage"] is None


def test_info_date_from_source_date_epoch(files) -> None:
    _, (dated,) = records(files["dated"])
    assert dated["date"] == "2023-11-14T22:13:20Z"
    # reproducible: the same epoch gives the same bytes
    again = files["dated"].with_name("dated2")
    cfiguard_cli("harden", files["plain"], "-o", again, SOURCE_DATE_EPOCH="1700000000")
    assert again.read_bytes() == files["dated"].read_bytes()


def test_info_text_table(files) -> None:
    p = cfiguard_cli("info", files["hardened"], files["plain"], files["dated"])
    assert p.returncode == 0
    head, hard, plain, dated = p.stdout.splitlines()
    assert head.split() == ["FILE", "CFI", "VERSION", "POLICY", "COVERAGE", "MODE", "DATE"]
    c = json.loads(files["report.json"].read_text())["counts"]
    n = c["guarded"] + c["safe"]
    assert hard.split() == [
        str(files["hardened"]),
        "yes",
        cfiguard.__version__,
        "coarse",
        f"{100 * n / c['found']:.1f}%",
        f"({n}/{c['found']})",
        "enforce",
        "not",
        "recorded",
    ]
    assert plain.split() == [str(files["plain"]), "no", "-", "-", "-", "-", "-"]
    assert dated.split()[-1] == "2023-11-14T22:13:20Z"
    col = head.index("CFI")
    assert hard[col : col + 3] == "yes" and plain[col : col + 2] == "no"  # aligned columns


def test_info_unusable_and_invalid(files, tmp_path: Path) -> None:
    code, (txt, missing, hard) = records(files["text"], tmp_path / "missing", files["hardened"])
    assert code == 2
    assert txt["status"] == "unusable" and txt["error"] == "not an ELF file"
    assert missing["status"] == "unusable" and hard["status"] == "hardened"
    p = cfiguard_cli("info", files["text"])
    assert p.returncode == 2 and p.stderr == f"cfiguard: error: {files['text']}: not an ELF file\n"
    if shutil.which("objcopy") is None:
        pytest.skip("objcopy (binutils) not installed")
    junk = tmp_path / "junk"
    junk.write_bytes(b"NOTCFIGUARD{}")
    bogus = tmp_path / "bogus"
    subprocess.run(
        ["objcopy", "--add-section", f".cfiguard={junk}", str(files["plain"]), str(bogus)], check=True
    )
    code, (rec,) = records(bogus)
    assert code == 0 and rec["status"] == "invalid manifest" and "CFIGUARD" in rec["error"]
    assert "warning" in cfiguard_cli("info", bogus).stderr


def test_info_of_an_older_manifest(files, tmp_path: Path) -> None:
    """A manifest from before the provenance fields: hardened, the rest unknown ("-")."""
    if shutil.which("objcopy") is None:
        pytest.skip("objcopy (binutils) not installed")
    raw = tmp_path / "raw"
    subprocess.run(["objcopy", f"--dump-section=.cfiguard={raw}", str(files["hardened"])], check=True)
    data = raw.read_bytes()
    assert data.startswith(b"CFIGUARD")
    m = json.loads(data[8:])
    old = {k: v for k, v in m.items() if k not in ("tool", "version", "policy", "coverage", "date")}
    (tmp_path / "old.json").write_bytes(b"CFIGUARD" + json.dumps(old).encode())
    older = tmp_path / "older"
    subprocess.run(
        [
            "objcopy",
            "--update-section",
            f".cfiguard={tmp_path / 'old.json'}",
            str(files["hardened"]),
            str(older),
        ],
        check=True,
    )
    _, (rec,) = records(older)
    assert rec["status"] == "hardened" and rec["tool_version"] is None and rec["coverage"] is None
    assert cfiguard_cli("info", older).stdout.splitlines()[1].split()[1:5] == ["yes", "-", "-", "-"]
