"""`--help` is the manual, and shell completion works in a real bash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ("harden", "verify", "info", "wheel", "version")


def cfiguard(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="100", **extra)
    return subprocess.run(
        [sys.executable, "-m", "cfiguard.cli", *args], capture_output=True, text=True, env=e
    )


def test_top_level_help_lists_every_command() -> None:
    p = cfiguard("--help")
    assert p.returncode == 0 and "Usage: cfiguard [OPTIONS] COMMAND [ARGS]..." in p.stdout
    for c in COMMANDS:
        assert f" {c} " in p.stdout, c
    for flag in ("--cmake-dir", "--version", "--install-completion", "--show-completion"):
        assert flag in p.stdout
    assert cfiguard("-h").stdout == p.stdout
    assert (
        cfiguard().stdout.rstrip() == p.stdout.rstrip()
    )  # no arguments: the help (and exit 2, as click does)


@pytest.mark.parametrize(
    ("command", "must"),
    [
        (
            "harden",
            [
                "--out-dir",
                "--in-place",
                "--jobs",
                "--cache",
                "CFIGUARD_CACHE",
                "--quiet",
                "--verbose",
                "--report-dir",
                "--policy",
                "Exit codes",
                "Examples",
            ],
        ),
        ("verify", ["--format", "sarif", "Exit codes", "Examples"]),
        ("info", ["--format", "SOURCE_DATE_EPOCH", "Exit codes", "Example"]),
        ("wheel", ["--skip-unhardenable", "RECORD", "Exit codes", "Example"]),
    ],
)
def test_command_help_is_a_manual(command: str, must: list[str]) -> None:
    p = cfiguard(command, "--help")
    assert p.returncode == 0, p.stderr
    for word in must:
        assert word in p.stdout, (command, word)


def test_version_flag_and_command() -> None:
    import cfiguard as pkg

    assert cfiguard("--version").stdout.strip() == pkg.__version__ == cfiguard("version").stdout.strip()


def test_show_completion_script() -> None:
    """The bash script (named: detecting the shell depends on the parent processes, which differ under CI;
    zsh and fish come from the same typer machinery)."""
    p = cfiguard("--show-completion", "bash")
    assert p.returncode == 0 and "_CFIGUARD_COMPLETE" in p.stdout, p.stdout


def test_bash_completion_completes(tmp_path: Path) -> None:
    """Source the script in a real bash and ask it to complete, as pressing TAB does."""
    if shutil.which("bash") is None:
        pytest.skip("bash not installed")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "cfiguard").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cfiguard.cli "$@"\n')
    (bindir / "cfiguard").chmod(0o755)
    env = dict(os.environ, PYTHONPATH=str(REPO), PATH=f"{bindir}:{os.environ['PATH']}")

    def complete(*words: str) -> list[str]:
        script = (
            "source <(cfiguard --show-completion bash)\n"
            f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
            '_cfiguard_completion cfiguard\nprintf "%s\\n" "${COMPREPLY[@]}"\n'
        )
        p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == 0, p.stderr
        return [w for w in p.stdout.splitlines() if w]

    assert complete("cfiguard", "ha") == ["harden"]
    assert set(complete("cfiguard", "")) >= set(COMMANDS)
    assert {"--out-dir", "--output"} <= set(complete("cfiguard", "harden", "--out"))
    assert complete("cfiguard", "verify", "--format", "") == ["text", "json", "sarif"]
    assert complete("cfiguard", "harden", "x", "--policy", "") == ["coarse"]
