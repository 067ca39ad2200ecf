"""The violation handler: one per module, in the new code segment.

Its source is `cfiguard/runtime/handler.s` (readable assembly with its own tests); this module only hands its
bytes to the rewriter. It contains no `ret` and no indirect branch, so it adds no unguarded site.
"""

from __future__ import annotations

from cfiguard.errors import RewriteError
from cfiguard.runtime import AssemblyError, audit_logger, violation_handler


def handler_code() -> bytes:
    """Position-independent handler bytes: code, then its strings."""
    try:
        return violation_handler()
    except AssemblyError as e:  # pragma: no cover
        raise RewriteError(str(e)) from None


def audit_logger_code() -> bytes:
    """The audit logger (`harden --audit`): writes the violation message and returns."""
    try:
        return audit_logger()
    except AssemblyError as e:  # pragma: no cover
        raise RewriteError(str(e)) from None
