"""Code that runs inside the hardened binary, as readable assembly sources (one `.s` file per component).

Nothing here imports the rewriter: the rewriter asks for a component's bytes and places them. Strings that a
component needs are appended after its code, as `name:` labels the source refers to rip-relative.

- `handler.s`: the violation handler (one per module): blocks every signal, writes the message, dies.
- `message.s`: the message formatting and write shared by the handler and the audit logger.
- `audit.s`: the audit logger (`harden --audit`): writes the message and returns.
- `xmod_ret.s`, `xmod_fwd.s`: the cross-module stubs (one per guarded site).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

VIOLATION_STRINGS = {
    "s_prefix": b"cfiguard: CFI violation: ",
    "s_call": b"call",
    "s_jmp": b"jmp",
    "s_ret": b"ret",
    "s_at": b" at 0x",
    "s_arrow": b" -> 0x",
    "s_digits": b"0123456789abcdef",
    "s_in": b" (in ",
}
SYMTAB_PLACEHOLDER = bytes.fromhex("48 8d 1d 64 63 62 61".replace(" ", ""))  # lea rbx, [rip + SYMTAB]


def symtab_field(code: bytes) -> int:
    """Offset of the rel32 of `lea rbx, [rip + SYMTAB]` in a handler or logger, for the rewriter to patch."""
    k = code.find(SYMTAB_PLACEHOLDER)
    if k < 0 or code.find(SYMTAB_PLACEHOLDER, k + 1) >= 0:
        raise AssemblyError("the SYMTAB field is missing or ambiguous")
    return k + 3


class AssemblyError(Exception):
    """keystone rejected a runtime source (a bug in cfiguard, never in the input)."""


def source(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text()


@cache
def assemble(name: str, strings: tuple[tuple[str, bytes], ...] = ()) -> bytes:
    """Bytes of runtime component `name` (a `.s` file of this package), assembled at address 0 with its
    strings appended. The code is position-independent."""
    import keystone

    src = source(name)
    for label, value in strings:
        src += f"\n{label}:\n" + "".join(f"    .byte {b}\n" for b in value)
    try:
        ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
        enc, _ = ks.asm(src, 0)
    except keystone.KsError as e:
        raise AssemblyError(f"keystone failed on {name}: {e}") from None
    return bytes(enc)


AUDIT_PREFIX = b"cfiguard: CFI violation (audit, continuing): "


def composed(name: str, prefix: bytes) -> str:
    """Source of `name` with the shared message code (message.s) put in, for a message starting `prefix`."""
    message = source("message.s").replace("{prefix_len}", str(len(prefix)))
    return source(name).replace("{message}", message)


@cache
def _assemble_text(text: str, strings: tuple[tuple[str, bytes], ...]) -> bytes:
    import keystone

    for label, value in strings:
        text += f"\n{label}:\n" + "".join(f"    .byte {b}\n" for b in value)
    try:
        ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
        enc, _ = ks.asm(text, 0)
    except keystone.KsError as e:
        raise AssemblyError(f"keystone failed: {e}") from None
    return bytes(enc)


def violation_handler() -> bytes:
    return _assemble_text(
        composed("handler.s", VIOLATION_STRINGS["s_prefix"]), tuple(VIOLATION_STRINGS.items())
    )


def audit_logger() -> bytes:
    strings = {**VIOLATION_STRINGS, "s_prefix": AUDIT_PREFIX}
    return _assemble_text(composed("audit.s", AUDIT_PREFIX), tuple(strings.items()))
