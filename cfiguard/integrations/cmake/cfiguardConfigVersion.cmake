# cfiguardConfigVersion.cmake: the version is read from the Python package beside this file
# (cfiguard/__init__.py), so it can never disagree with `cfiguard --version`.
#
# Compatibility: a request for X.Y is satisfied by X.Z with Z >= Y (same major); while the major version is
# 0, only by the same minor (0.1.x for 0.1), as minor releases before 1.0 may change behaviour.

file(STRINGS "${CMAKE_CURRENT_LIST_DIR}/../../__init__.py" _cfiguard_version_line
  REGEX "^__version__ = \"[0-9]+\\.[0-9]+\\.[0-9]+[^\"]*\"")
string(REGEX REPLACE "^__version__ = \"([0-9]+\\.[0-9]+\\.[0-9]+).*" "\\1"
  PACKAGE_VERSION "${_cfiguard_version_line}")
unset(_cfiguard_version_line)

if(NOT PACKAGE_VERSION MATCHES "^[0-9]+\\.[0-9]+\\.[0-9]+$")
  set(PACKAGE_VERSION "0.0.0")
  set(PACKAGE_VERSION_UNSUITABLE TRUE)
  return()
endif()

set(PACKAGE_VERSION_COMPATIBLE FALSE)
set(PACKAGE_VERSION_EXACT FALSE)
if(NOT DEFINED PACKAGE_FIND_VERSION OR PACKAGE_FIND_VERSION STREQUAL "")
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
elseif(NOT PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  string(REGEX MATCH "^[0-9]+" _have_major "${PACKAGE_VERSION}")
  string(REGEX MATCH "^[0-9]+\\.[0-9]+" _have_minor "${PACKAGE_VERSION}")
  if(_have_major STREQUAL "0")
    if("${PACKAGE_FIND_VERSION_MAJOR}.${PACKAGE_FIND_VERSION_MINOR}" STREQUAL _have_minor
       OR (PACKAGE_FIND_VERSION_COUNT EQUAL 1 AND PACKAGE_FIND_VERSION_MAJOR EQUAL 0))
      set(PACKAGE_VERSION_COMPATIBLE TRUE)
    endif()
  elseif(PACKAGE_FIND_VERSION_MAJOR STREQUAL _have_major)
    set(PACKAGE_VERSION_COMPATIBLE TRUE)
  endif()
  unset(_have_major)
  unset(_have_minor)
  if(PACKAGE_FIND_VERSION VERSION_EQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
