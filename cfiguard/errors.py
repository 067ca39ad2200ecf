"""One exception hierarchy for the whole tool.

Errors from lief, capstone and keystone are wrapped at the boundary into these classes, so the CLI can map
each to an exit code and a one-line message without ever showing a traceback.
"""


class CfiguardError(Exception):
    """Base class. The CLI prints `cfiguard: error: <message>` and exits with `exit_code`."""

    exit_code = 2


class InputError(CfiguardError):
    """The input cannot be used: missing, not ELF, wrong architecture, corrupt, unsupported kind."""


class AlreadyHardenedError(InputError):
    """The input already carries a cfiguard manifest; hardening twice is refused."""


class UnwindError(CfiguardError):
    """Unwind data (.eh_frame, .eh_frame_hdr, LSDA) could not be parsed or regenerated."""


class RewriteError(CfiguardError):
    """The rewriter could not produce a correct output."""


class OutputError(CfiguardError):
    """The output could not be written (missing or read-only directory, disk full)."""


class StrictModeError(CfiguardError):
    """--strict was given and some sites stay unguarded; nothing is written."""

    exit_code = 1


class VerificationError(CfiguardError):
    """The output failed the independent verifier (harden checks its own output); nothing is written."""

    exit_code = 1
