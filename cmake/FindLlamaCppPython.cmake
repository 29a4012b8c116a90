# Locates the llama.cpp that an installed llama-cpp-python carries, so that libomnisift is built
# against exactly the headers of the runtime it will be loaded next to (one llama.cpp per process).
#
# Input:  LLAMA_CPP_PYTHON_VERSION_REQUIRED, Python_EXECUTABLE (scikit-build-core sets it),
#         optional LLAMA_CPP_PYTHON_DIR = site-packages/llama_cpp to skip the Python query.
# Output: imported targets LlamaCppPython::llama, ::mtmd, ::ggml, ::ggml-base; the variables
#         LLAMA_CPP_PYTHON_DIR (the package dir), LLAMA_CPP_PYTHON_LIBDIR (its lib/) and
#         LLAMA_CPP_PYTHON_VERSION.

if(NOT Python_EXECUTABLE)
  find_package(Python COMPONENTS Interpreter REQUIRED)
endif()

# find_spec does not execute llama_cpp/__init__.py, so no shared library is loaded at configure time.
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c [=[
import importlib.metadata as md, importlib.util as u, sys
spec = u.find_spec("llama_cpp")
if spec is None or not spec.submodule_search_locations:
    sys.exit("llama_cpp is not importable")
print(md.version("llama-cpp-python"))
print(list(spec.submodule_search_locations)[0])
]=]
  OUTPUT_VARIABLE _lcp_out ERROR_VARIABLE _lcp_err RESULT_VARIABLE _lcp_rc
  OUTPUT_STRIP_TRAILING_WHITESPACE)

if(NOT _lcp_rc EQUAL 0)
  message(FATAL_ERROR
    "pyomnisift: llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION_REQUIRED} must be installed in the "
    "Python that builds pyomnisift (${Python_EXECUTABLE}): ${_lcp_err}\n"
    "Install it first (`pip install llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION_REQUIRED}`), "
    "then build pyomnisift with `pip install --no-build-isolation .`, or let pip's build isolation "
    "install it as a build requirement.")
endif()
string(REPLACE "\n" ";" _lcp_out "${_lcp_out}")
list(GET _lcp_out 0 LLAMA_CPP_PYTHON_VERSION)
if(NOT LLAMA_CPP_PYTHON_DIR)
  list(GET _lcp_out 1 LLAMA_CPP_PYTHON_DIR)
endif()

if(NOT LLAMA_CPP_PYTHON_VERSION VERSION_EQUAL LLAMA_CPP_PYTHON_VERSION_REQUIRED)
  message(FATAL_ERROR
    "pyomnisift: found llama-cpp-python ${LLAMA_CPP_PYTHON_VERSION} at ${LLAMA_CPP_PYTHON_DIR}, "
    "but this pyomnisift is written against exactly ${LLAMA_CPP_PYTHON_VERSION_REQUIRED} "
    "(the llama.cpp C API changes between releases). "
    "Run `pip install llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION_REQUIRED}`.")
endif()

get_filename_component(_lcp_site "${LLAMA_CPP_PYTHON_DIR}" DIRECTORY)
set(LLAMA_CPP_PYTHON_LIBDIR "${LLAMA_CPP_PYTHON_DIR}/lib")
set(LLAMA_CPP_PYTHON_INCLUDE "${_lcp_site}/include")

foreach(_h llama.h ggml.h ggml-backend.h gguf.h mtmd.h)
  if(NOT EXISTS "${LLAMA_CPP_PYTHON_INCLUDE}/${_h}")
    message(FATAL_ERROR "pyomnisift: ${LLAMA_CPP_PYTHON_INCLUDE}/${_h} is missing: the "
      "llama-cpp-python install at ${LLAMA_CPP_PYTHON_DIR} carries no development headers.")
  endif()
endforeach()

# The ggml CMake config that llama-cpp-python installs is read only for its version check; its
# targets point at the duplicate libraries in site-packages/lib, which we must never link (see
# shared/notes/llama-cpp.md), so the imported targets below use llama_cpp/lib instead.
find_package(ggml CONFIG QUIET PATHS "${_lcp_site}/lib/cmake/ggml" NO_DEFAULT_PATH)
if(ggml_FOUND)
  message(STATUS "pyomnisift: ggml ${ggml_VERSION} from llama-cpp-python ${LLAMA_CPP_PYTHON_VERSION}")
endif()

function(_lcp_import name soname_glob)
  file(GLOB _cands "${LLAMA_CPP_PYTHON_LIBDIR}/${soname_glob}")
  if(NOT _cands)
    message(FATAL_ERROR "pyomnisift: ${LLAMA_CPP_PYTHON_LIBDIR}/${soname_glob} not found "
      "(is llama-cpp-python built with shared libraries?)")
  endif()
  list(SORT _cands)
  list(GET _cands 0 _lib)
  add_library(LlamaCppPython::${name} SHARED IMPORTED GLOBAL)
  set_target_properties(LlamaCppPython::${name} PROPERTIES
    IMPORTED_LOCATION "${_lib}"
    INTERFACE_INCLUDE_DIRECTORIES "${LLAMA_CPP_PYTHON_INCLUDE}")
endfunction()

if(APPLE)
  set(_ext dylib)
elseif(WIN32)
  set(_ext dll)
else()
  set(_ext so)
endif()
_lcp_import(llama     "libllama.${_ext}")
_lcp_import(mtmd      "libmtmd.${_ext}")
_lcp_import(ggml      "libggml.${_ext}")
_lcp_import(ggml-base "libggml-base.${_ext}")
