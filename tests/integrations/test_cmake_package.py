"""The CMake package: `cfiguard --cmake-dir`, find_package(cfiguard CONFIG), cfiguard_harden().

The sample in samples/integrations/cmake/ (a shared library and an executable linked to it) is configured,
built, run and verified with the real cmake; its output must equal an unhardened build of the same project.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from integ_support import (
    OFFLINE,
    REPO,
    assert_hardened,
    assert_not_hardened,
    info,
    need,
    reference_output,
    run,
)

import cfiguard


def configure(src: Path, build: Path, env: dict, cfiguard_exe: Path, *extra: str, check: bool = True):
    cmake_dir = run([cfiguard_exe, "--cmake-dir"], env=env).stdout.strip()
    return run(["cmake", "-S", src, "-B", build, f"-Dcfiguard_DIR={cmake_dir}", *extra], env=env, check=check)


def test_cmake_dir_holds_the_package(cfiguard_exe: Path, tool_env: dict) -> None:
    p = run([cfiguard_exe, "--cmake-dir"], env=tool_env)
    d = Path(p.stdout.strip())
    assert p.stdout.count("\n") == 1 and d.is_absolute()
    assert (d / "cfiguardConfig.cmake").is_file() and (d / "cfiguardConfigVersion.cmake").is_file()
    from cfiguard import api

    assert Path(api.cmake_dir()) == d


def test_built_wheel_of_cfiguard_ships_the_cmake_files(tmp_path: Path) -> None:
    """package-data: a non-editable install must carry cfiguard/integrations/cmake/*.cmake too."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "cfiguard", src / "cfiguard", ignore=shutil.ignore_patterns("__pycache__"))
    # An isolated build, as `pip install .` does: it fetches setuptools from the package index.
    p = run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "--retries",
            "1",
            "--timeout",
            "20",
            "-w",
            tmp_path,
            src,
        ],
        check=False,
    )
    if p.returncode != 0 and OFFLINE.search(p.stderr):
        pytest.skip(f"the package index is not reachable to build a wheel: {p.stderr.strip()[-300:]}")
    assert p.returncode == 0, p.stderr
    (whl,) = tmp_path.glob("cfiguard-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert "cfiguard/integrations/cmake/cfiguardConfig.cmake" in names
    assert "cfiguard/integrations/cmake/cfiguardConfigVersion.cmake" in names
    assert "cfiguard/runtime/handler.s" in names


def test_cmake_sample_hardened_runs_like_unhardened(
    sample, cfiguard_exe: Path, tool_env: dict, tmp_path: Path
) -> None:
    need("cmake", "gcc")
    src = sample("cmake")
    expected = reference_output(tmp_path)

    plain = tmp_path / "plain"
    configure(src, plain, tool_env, cfiguard_exe, "-DSAMPLE_HARDEN=OFF")
    run(["cmake", "--build", plain], env=tool_env)
    assert run([plain / "app"]).stdout == expected
    assert_not_hardened(cfiguard_exe, plain / "app", plain / "libshapes.so", env=tool_env)

    build = tmp_path / "build"
    configure(src, build, tool_env, cfiguard_exe)
    p = run(["cmake", "--build", build], env=tool_env)
    assert "cfiguard: hardening shapes" in p.stdout and "cfiguard: hardening app" in p.stdout
    app, lib = build / "app", build / "libshapes.so"
    assert_hardened(cfiguard_exe, app, lib, env=tool_env)
    assert run(["ldd", app]).stdout.count(str(lib)) == 1  # the hardened library is the one loaded
    assert run([app]).stdout == expected

    # A build with nothing to do must not harden again (that would fail: already hardened).
    again = run(["cmake", "--build", build], env=tool_env)
    assert "cfiguard: hardening" not in again.stdout

    # An edited source: the library relinks, and is hardened again.
    (src / "shapes.c").write_text((src / "shapes.c").read_text() + "\nint shapes_edited;\n")
    p = run(["cmake", "--build", build], env=tool_env)
    assert "cfiguard: hardening shapes" in p.stdout
    assert_hardened(cfiguard_exe, lib, env=tool_env)
    assert run([app]).stdout == expected

    # cmake --install edits the RUNPATH of the installed copies: they must still verify and run.
    prefix = tmp_path / "prefix"
    run(["cmake", "--install", build, "--prefix", prefix], env=tool_env)
    installed_app, installed_lib = prefix / "bin" / "app", prefix / "lib" / "libshapes.so"
    assert_hardened(cfiguard_exe, installed_app, installed_lib, env=tool_env)
    env = dict(os.environ, LD_LIBRARY_PATH=str(prefix / "lib"))
    assert run([installed_app], env=env).stdout == expected


@pytest.mark.parametrize("generator", ["Ninja", "Unix Makefiles"])
def test_failed_hardening_is_redone_by_the_next_build(
    sample, cfiguard_exe: Path, tool_env: dict, tmp_path: Path, generator: str
) -> None:
    """A POST_BUILD failure fails the build, and the target is not left up to date."""
    need("cmake", "gcc", "ninja" if generator == "Ninja" else "make")
    src = sample("cmake")
    broken = tmp_path / "broken-cfiguard"
    broken.write_text("#!/bin/sh\necho 'cfiguard: error: simulated failure' >&2\nexit 1\n")
    broken.chmod(0o755)
    build = tmp_path / "build"
    configure(src, build, tool_env, cfiguard_exe, "-G", generator, f"-DCFIGUARD_EXECUTABLE={broken}")
    p = run(["cmake", "--build", build], env=tool_env, check=False)
    assert p.returncode != 0 and "simulated failure" in p.stdout + p.stderr
    configure(src, build, tool_env, cfiguard_exe, f"-DCFIGUARD_EXECUTABLE={cfiguard_exe}")
    p = run(["cmake", "--build", build], env=tool_env)
    assert "Linking C shared library libshapes.so" in p.stdout  # relinked, not taken as up to date
    assert "Linking C executable app" in p.stdout
    assert_hardened(cfiguard_exe, build / "app", build / "libshapes.so", env=tool_env)


def _project(tmp_path: Path, body: str, languages: str = "NONE") -> Path:
    d = tmp_path / "proj"
    d.mkdir(exist_ok=True)
    (d / "CMakeLists.txt").write_text(
        f"cmake_minimum_required(VERSION 3.16)\nproject(probe LANGUAGES {languages})\n{body}\n"
    )
    (d / "lib.c").write_text("int f(int x) { return x + 1; }\n")
    return d


@pytest.mark.parametrize(
    ("request_version", "ok"),
    [
        ("{major}.{minor}", True),
        ("{major}.{minor}.{patch}", True),
        ("{major_plus}.0", False),
        ("{major}.{minor_plus}", False),
    ],
)
def test_version_file(
    tmp_path: Path, cfiguard_exe: Path, tool_env: dict, request_version: str, ok: bool
) -> None:
    need("cmake")
    major, minor, patch = (int(x) for x in cfiguard.__version__.split(".")[:3])
    want = request_version.format(
        major=major, minor=minor, patch=patch, major_plus=major + 1, minor_plus=minor + 1
    )
    d = _project(
        tmp_path,
        f'find_package(cfiguard {want} CONFIG REQUIRED)\nmessage(STATUS "cfiguard=${{cfiguard_VERSION}} '
        'exe=${CFIGUARD_EXECUTABLE}")',
    )
    p = configure(d, tmp_path / "b", tool_env, cfiguard_exe, check=False)
    if ok:
        assert p.returncode == 0, p.stderr
        assert f"cfiguard={cfiguard.__version__}" in p.stdout
        assert "exe=" in p.stdout and "exe=\n" not in p.stdout
    else:
        assert p.returncode != 0 and "cfiguard" in p.stderr and "version" in p.stderr.lower()


def test_cfiguard_harden_rejects_misuse(tmp_path: Path, cfiguard_exe: Path, tool_env: dict) -> None:
    need("cmake", "gcc")
    cases = {
        "add_library(s STATIC lib.c)\ncfiguard_harden(s)": "cannot be hardened",
        "add_library(s SHARED lib.c)\ncfiguard_harden(s VERIFY BOGUS)": "unknown arguments: BOGUS",
        "cfiguard_harden(nothing)": "no such target",
        "add_library(s SHARED lib.c)\ncfiguard_harden(s)\ncfiguard_harden(s)": "already called",
    }
    for body, message in cases.items():
        d = _project(tmp_path, "find_package(cfiguard CONFIG REQUIRED)\n" + body, "C")
        p = configure(d, tmp_path / "b", tool_env, cfiguard_exe, check=False)
        assert p.returncode != 0 and message in p.stderr, (body, p.stderr)
        shutil.rmtree(tmp_path / "b")


def test_policy_is_passed_to_cfiguard(tmp_path: Path, cfiguard_exe: Path, tool_env: dict) -> None:
    """POLICY reaches `cfiguard harden --policy`: an unknown policy fails the build with cfiguard's message."""
    need("cmake", "gcc")
    d = _project(
        tmp_path,
        "find_package(cfiguard CONFIG REQUIRED)\nadd_library(s SHARED lib.c)\n"
        "cfiguard_harden(s POLICY finegrained REPORT ${CMAKE_BINARY_DIR}/s.json)",
        "C",
    )
    configure(d, tmp_path / "b", tool_env, cfiguard_exe)
    p = run(["cmake", "--build", tmp_path / "b"], env=tool_env, check=False)
    assert p.returncode != 0 and "--policy 'finegrained': unknown" in p.stdout + p.stderr
    (tmp_path / "b" / "CMakeCache.txt").unlink()
    d = _project(
        tmp_path,
        "find_package(cfiguard CONFIG REQUIRED)\nadd_library(s SHARED lib.c)\n"
        "cfiguard_harden(s POLICY coarse REPORT ${CMAKE_BINARY_DIR}/s.json)",
        "C",
    )
    configure(d, tmp_path / "b", tool_env, cfiguard_exe)
    run(["cmake", "--build", tmp_path / "b"], env=tool_env)
    (rec,) = info(cfiguard_exe, tmp_path / "b" / "libs.so", env=tool_env)
    assert rec["policy"] == "coarse" and (tmp_path / "b" / "s.json").is_file()


def test_missing_program_is_a_clear_configure_error(tmp_path: Path, cfiguard_exe: Path) -> None:
    need("cmake")
    d = _project(tmp_path, "find_package(cfiguard CONFIG REQUIRED)")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no cfiguard anywhere
    cmake_dir = subprocess.run([cfiguard_exe, "--cmake-dir"], capture_output=True, text=True).stdout.strip()
    if (Path(os.path.normpath(os.path.join(cmake_dir, *[".."] * 6))) / "bin" / "cfiguard").exists():
        pytest.skip("cfiguard is installed next to its CMake package: the hint finds it without PATH")
    p = run(["cmake", "-S", d, "-B", tmp_path / "b", f"-Dcfiguard_DIR={cmake_dir}"], env=env, check=False)
    assert p.returncode != 0 and "CFIGUARD_EXECUTABLE" in p.stderr
