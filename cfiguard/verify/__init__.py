"""cfiguard verify: an independent, fail-closed checker of hardened binaries.

It shares no code with the rewriter (an import-linter contract enforces this): it parses the ELF file itself,
decodes the code itself with capstone, and accepts a binary only if every reachable ret, indirect call and
indirect jmp is protected by an exact guard unit whose constants match the layout. See docs/verifier.md.
"""

from cfiguard.verify.checker import CHECKS, Finding, Result, verify_bytes, verify_file

__all__ = ["CHECKS", "Finding", "Result", "verify_bytes", "verify_file"]
