"""cfiguard_harden(): harden a linked binary as an ordinary Bazel action (a genrule).

    load("//:cfiguard.bzl", "cfiguard_harden")
    cc_binary(name = "app", srcs = ["main.c"])
    cfiguard_harden(name = "app_cfi", src = ":app", executable = True)

The action is `cfiguard harden SRC -o OUT`: a pure function of its input (cfiguard's output is
byte-identical for the same input, options and cfiguard version), so Bazel's action cache, --disk_cache and
a remote cache share hardened outputs between machines like any compile. cfiguard itself is not an input
of the action here: see docs/integrations.md for keeping the cache key honest when cfiguard changes.
"""

def cfiguard_harden(name, src, out = None, strict = False, verify = True, **kwargs):
    flags = ["--quiet"]
    if strict:
        flags.append("--strict")
    if not verify:
        flags.append("--no-verify")
    native.genrule(
        name = name,
        srcs = [src],
        outs = [out or name],
        cmd = "$(CFIGUARD) harden %s $< -o $@" % " ".join(flags),
        message = "cfiguard: hardening %s" % src,
        **kwargs
    )
