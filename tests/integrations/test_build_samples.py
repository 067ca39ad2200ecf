"""The Meson, Make and Bazel samples (samples/integrations/), built with the real tools, and the cache
shared between two build trees (two machines sharing CFIGUARD_CACHE).

Each hardened output must print what an unhardened build prints, carry the manifest and pass
`cfiguard verify`; the unhardened files must not carry the manifest (so the comparison means something).
"""

from __future__ import annotations

import filecmp
import hashlib
import os
import re
from pathlib import Path

import pytest
from integ_support import SAMPLES, SOURCES, assert_hardened, assert_not_hardened, need, reference_output, run


@pytest.mark.parametrize("name", ["meson", "make", "bazel"])
def test_samples_share_one_program(name: str) -> None:
    """Each sample carries its own copy of the program (build tools will not reach outside their tree)."""
    for f in SOURCES:
        assert filecmp.cmp(SAMPLES / "cmake" / f, SAMPLES / name / f, shallow=False), f"{name}/{f} differs"


# ----------------------------------------------------------------------------------------------- meson


def test_meson_custom_target(sample, cfiguard_exe: Path, tool_env: dict, tmp_path: Path) -> None:
    need("meson", "ninja", "gcc")
    src = sample("meson")
    expected = reference_output(tmp_path)
    build = tmp_path / "build"
    run(["meson", "setup", build, src], env=tool_env)
    p = run(["meson", "compile", "-C", build], env=tool_env)
    assert "hardened/app-cfi" in p.stdout and "hardened/libshapes-cfi" in p.stdout
    hard_app, hard_lib = build / "hardened" / "app", build / "hardened" / "libshapes.so"
    assert_hardened(cfiguard_exe, hard_app, hard_lib, env=tool_env)
    assert_not_hardened(cfiguard_exe, build / "app", build / "libshapes.so", env=tool_env)
    assert str(hard_lib) in run(["ldd", hard_app]).stdout  # $ORIGIN: the hardened library next to it
    assert run([hard_app]).stdout == expected
    assert run([build / "app"]).stdout == expected
    t = run(["meson", "test", "-C", build, "--print-errorlogs"], env=tool_env)
    assert "Ok:                 2" in t.stdout, t.stdout
    # Nothing to do on a second build; an edited source rebuilds and re-hardens the library.
    assert "no work to do" in run(["ninja", "-C", build], env=tool_env).stdout
    (src / "shapes.c").write_text((src / "shapes.c").read_text() + "\nint shapes_edited;\n")
    p = run(["ninja", "-C", build], env=tool_env)
    assert "hardened/libshapes-cfi" in p.stdout
    assert_hardened(cfiguard_exe, hard_lib, env=tool_env)
    assert run([hard_app]).stdout == expected


# ------------------------------------------------------------------------------------------------ make


def test_make_post_link_recipe(sample, cfiguard_exe: Path, tool_env: dict, tmp_path: Path) -> None:
    need("make", "cc")
    expected = reference_output(tmp_path)
    hard = sample("make")
    p = run(["make", "-C", hard], env=tool_env)
    assert "harden --in-place" in p.stdout
    assert_hardened(cfiguard_exe, hard / "app", hard / "libshapes.so", env=tool_env)
    assert run([hard / "app"]).stdout == expected
    run(["make", "-C", hard, "verify"], env=tool_env)
    assert "Nothing to be done" in run(["make", "-C", hard], env=tool_env).stdout

    plain = tmp_path / "plain"
    plain.mkdir()
    for f in (*SOURCES, "Makefile"):
        (plain / f).write_bytes((SAMPLES / "make" / f).read_bytes())
    run(["make", "-C", plain, "HARDEN="], env=tool_env)
    assert_not_hardened(cfiguard_exe, plain / "app", plain / "libshapes.so", env=tool_env)
    assert run([plain / "app"]).stdout == expected


def test_make_failed_hardening_deletes_the_target(sample, tool_env: dict, cfiguard_exe: Path) -> None:
    """.DELETE_ON_ERROR: a link that succeeded but a hardening that failed leaves no file up to date."""
    need("make", "cc")
    d = sample("make")
    p = run(["make", "-C", d, "CFIGUARD=false"], env=tool_env, check=False)
    assert p.returncode != 0 and not (d / "libshapes.so").exists()
    run(["make", "-C", d], env=tool_env)  # the next build links and hardens it
    assert_hardened(cfiguard_exe, d / "libshapes.so", d / "app", env=tool_env)


def test_shared_cache_between_two_build_trees(
    sample, cfiguard_exe: Path, tool_env: dict, tmp_path: Path
) -> None:
    """Two checkouts (two machines) sharing CFIGUARD_CACHE: the second build hardens nothing itself."""
    need("make", "cc")
    cache = tmp_path / "shared-cache"
    env = dict(tool_env, CFIGUARD_CACHE=str(cache))
    first = sample("make")
    p = run(["make", "-C", first, "CFIGUARD_FLAGS=--verbose"], env=env)
    assert "from the cache" not in p.stderr and p.stderr.count("cache miss") == 2
    second = tmp_path / "elsewhere"
    second.mkdir()
    for f in (*SOURCES, "Makefile"):
        (second / f).write_bytes((first / f).read_bytes())
    p = run(["make", "-C", second, "CFIGUARD_FLAGS=--verbose"], env=env)
    assert p.stderr.count("from the cache") == 2 and "cache miss" not in p.stderr, p.stderr
    for f in ("app", "libshapes.so"):
        assert (first / f).read_bytes() == (second / f).read_bytes()
    assert_hardened(cfiguard_exe, second / "app", second / "libshapes.so", env=env)
    assert run([second / "app"]).stdout == reference_output(tmp_path)


# ----------------------------------------------------------------------------------------------- bazel

# Stand-ins for @rules_cc, @rules_java and @rules_proto: Bazel 4 fetches them from GitHub to configure its
# C++ toolchain, which this machine cannot reach. They only re-export Bazel 4's native rules, which is all
# that those repositories held for this use. Test environment only: a user's Bazel fetches the real ones.
STUBS = {
    "rules_cc/cc/defs.bzl": "\n".join(
        f"{r} = native.{r}"
        for r in (
            "cc_binary",
            "cc_import",
            "cc_library",
            "cc_test",
            "cc_toolchain",
            "cc_toolchain_suite",
            "cc_proto_library",
            "fdo_prefetch_hints",
            "fdo_profile",
            "objc_library",
        )
    ),
    "rules_java/java/defs.bzl": "\n".join(
        f"{r} = native.{r}"
        for r in ("java_binary", "java_import", "java_library", "java_runtime", "java_toolchain", "java_test")
    ),
    "rules_proto/proto/defs.bzl": "proto_library = native.proto_library",
}


def _bazel(tmp_path: Path, cfiguard_exe: Path):
    stubs = tmp_path / "stubs"
    for rel, text in STUBS.items():
        f = stubs / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text + "\n")
        for d in (f.parent, f.parent.parent):
            (d / "BUILD").touch()
        (f.parent.parent / "WORKSPACE").touch()
    startup = ["bazel", "--batch", f"--output_user_root={tmp_path / 'bazel-root'}"]
    opts = [f"--override_repository={r}={stubs / r}" for r in ("rules_cc", "rules_java", "rules_proto")]
    opts += [f"--define=CFIGUARD={cfiguard_exe}", f"--disk_cache={tmp_path / 'disk-cache'}"]
    return startup, opts


def test_bazel_genrule(sample, cfiguard_exe: Path, tool_env: dict, tmp_path: Path) -> None:
    need("bazel", "gcc")
    ws = sample("bazel")
    startup, opts = _bazel(tmp_path, cfiguard_exe)
    env = dict(tool_env, HOME=str(tmp_path))  # keep ~/.cache/bazel out of the real home
    targets = ["//:app_cfi", "//:libshapes_cfi", "//:app"]
    run([*startup, "build", *opts, *targets], cwd=ws, env=env)
    bin_dir = ws / "bazel-bin"  # the convenience symlink Bazel makes in the workspace
    app, hard_app, hard_lib = bin_dir / "app", bin_dir / "app_cfi", bin_dir / "cfi" / "libshapes.so"
    assert_hardened(cfiguard_exe, hard_app, hard_lib, env=tool_env)
    assert_not_hardened(cfiguard_exe, app, env=tool_env)
    expected = reference_output(tmp_path)
    assert run([hard_app]).stdout == expected == run([app]).stdout
    digest = hashlib.sha256(hard_app.read_bytes()).hexdigest()

    # Hardening is an ordinary, cacheable action: after a clean, the disk cache (what a remote cache
    # shares between machines) gives back the same hardened bytes without running cfiguard.
    run([*startup, "clean"], cwd=ws, env=env)
    p = run([*startup, "build", *opts, *targets], cwd=ws, env=env)
    (summary,) = re.findall(r"^INFO: \d+ processes?: (.*)\.$", p.stderr, re.M)
    kinds = [part.split(" ", 1)[1] for part in summary.split(", ")]
    assert "remote cache hit" in kinds and set(kinds) <= {"remote cache hit", "internal"}, summary
    assert hashlib.sha256(hard_app.read_bytes()).hexdigest() == digest
    assert os.access(hard_app, os.X_OK)
