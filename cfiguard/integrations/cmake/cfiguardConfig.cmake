# cfiguardConfig.cmake: harden CMake targets with cfiguard after they link.
#
#   cmake -Dcfiguard_DIR="$(cfiguard --cmake-dir)" ...
#
#   find_package(cfiguard 0.1 CONFIG REQUIRED)
#   add_executable(app main.c)
#   cfiguard_harden(app VERIFY STRICT)
#
# cfiguard_harden(<target> [VERIFY] [STRICT] [NO_VERIFY] [POLICY <policy>] [REPORT <file.json>])
#
#   Adds a POST_BUILD step to <target> (an executable, shared library or module) that runs
#   `cfiguard harden --in-place $<TARGET_FILE:target>` right after it links: the file in the build tree is
#   replaced atomically, only when hardening succeeded.  If hardening fails, the build fails; and since
#   the target's rule did not complete, the next build links and hardens it again (no unhardened file is
#   ever left looking up to date).
#
#   VERIFY     also run `cfiguard verify` on the hardened file (harden already checks its own output with
#              the same verifier; this is the separate, explicit release check).
#   STRICT     fail the build if any indirect call, jump or return would stay unguarded (--strict).
#   NO_VERIFY  skip harden's own verification (--no-verify; not recommended).
#   POLICY p   label policy (--policy p); cfiguard rejects policies it does not implement.
#   REPORT f   write the JSON report of every site to f (--report f).
#
# Variables:
#   CFIGUARD_EXECUTABLE   the cfiguard program (cache variable; set it to choose one). Found next to this
#                         Python package (its venv's bin/), then in $VIRTUAL_ENV/bin, then on PATH.
#   cfiguard_VERSION      the version of the package holding this file.
#   CFIGUARD_HARDEN_FLAGS extra arguments for every `cfiguard harden` (default: --quiet).
# Target:
#   cfiguard::cfiguard    an imported executable for CFIGUARD_EXECUTABLE.

cmake_minimum_required(VERSION 3.16)
include_guard(GLOBAL)

if(NOT CFIGUARD_EXECUTABLE)
  # site-packages/cfiguard/integrations/cmake -> <prefix>/bin for a venv, ~/.local or /usr install.
  get_filename_component(_cfiguard_prefix "${CMAKE_CURRENT_LIST_DIR}/../../../../../.." ABSOLUTE)
  find_program(CFIGUARD_EXECUTABLE cfiguard
    HINTS "${_cfiguard_prefix}/bin" "$ENV{VIRTUAL_ENV}/bin"
    DOC "The cfiguard program used by cfiguard_harden()")
  unset(_cfiguard_prefix)
endif()

if(NOT CFIGUARD_EXECUTABLE)
  set(cfiguard_FOUND FALSE)
  set(cfiguard_NOT_FOUND_MESSAGE
    "cfiguard's CMake package was found at ${CMAKE_CURRENT_LIST_DIR}, but not the cfiguard program: "
    "put it on PATH (activate its venv) or set -DCFIGUARD_EXECUTABLE=/path/to/cfiguard")
  return()
endif()

set(CFIGUARD_HARDEN_FLAGS "--quiet" CACHE STRING "Extra arguments for every cfiguard harden run")

if(NOT TARGET cfiguard::cfiguard)
  add_executable(cfiguard::cfiguard IMPORTED GLOBAL)
  set_target_properties(cfiguard::cfiguard PROPERTIES IMPORTED_LOCATION "${CFIGUARD_EXECUTABLE}")
endif()

function(cfiguard_harden target)
  cmake_parse_arguments(PARSE_ARGV 1 _cfg "VERIFY;STRICT;NO_VERIFY" "POLICY;REPORT" "")
  if(_cfg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "cfiguard_harden(${target}): unknown arguments: ${_cfg_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT TARGET "${target}")
    message(FATAL_ERROR "cfiguard_harden(${target}): no such target")
  endif()
  get_target_property(_type "${target}" TYPE)
  if(NOT _type MATCHES "^(EXECUTABLE|SHARED_LIBRARY|MODULE_LIBRARY)$")
    message(FATAL_ERROR
      "cfiguard_harden(${target}): a ${_type} cannot be hardened (only executables and shared libraries)")
  endif()
  get_target_property(_done "${target}" CFIGUARD_HARDENED)
  if(_done)
    message(FATAL_ERROR "cfiguard_harden(${target}): already called for this target")
  endif()
  set_property(TARGET "${target}" PROPERTY CFIGUARD_HARDENED TRUE)

  set(_args harden --in-place "$<TARGET_FILE:${target}>" ${CFIGUARD_HARDEN_FLAGS})
  if(_cfg_STRICT)
    list(APPEND _args --strict)
  endif()
  if(_cfg_NO_VERIFY)
    list(APPEND _args --no-verify)
  endif()
  if(DEFINED _cfg_POLICY)
    list(APPEND _args --policy "${_cfg_POLICY}")
  endif()
  if(DEFINED _cfg_REPORT)
    list(APPEND _args --report "${_cfg_REPORT}")
  endif()
  set(_commands COMMAND "${CFIGUARD_EXECUTABLE}" ${_args})
  if(_cfg_VERIFY)
    list(APPEND _commands COMMAND "${CFIGUARD_EXECUTABLE}" verify "$<TARGET_FILE:${target}>")
  endif()
  add_custom_command(TARGET "${target}" POST_BUILD ${_commands}
    COMMENT "cfiguard: hardening ${target}"
    VERBATIM)
endfunction()
