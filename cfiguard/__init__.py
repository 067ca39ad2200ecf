"""cfiguard: label-based control-flow integrity for x86-64 ELF binaries by static rewriting."""

__version__ = "0.1.0"
