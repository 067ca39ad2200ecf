"""Integrations: build systems (the CMake package), batch hardening with a content-addressed cache, Python
wheels, and the `.cfiguard` manifest summary behind `cfiguard info`. See docs/integrations.md.

Everything here sits on top of `cfiguard.api.harden`; nothing here changes how a binary is hardened.
"""

from __future__ import annotations

from pathlib import Path


def cmake_dir() -> str:
    """The directory holding cfiguardConfig.cmake: pass it as `-Dcfiguard_DIR=...` to CMake."""
    return str(Path(__file__).resolve().parent / "cmake")
