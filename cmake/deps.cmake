# Finds every library vigil links with through pkg-config. A missing one stops the configuration
# with the Debian package that provides it (scripts/install-deps.sh installs them all).
find_package(PkgConfig)
if(NOT PKG_CONFIG_FOUND)
  message(FATAL_ERROR "pkg-config not found: apt-get install pkg-config (or run scripts/install-deps.sh)")
endif()

function(vg_require target module debpkg)
  pkg_check_modules(${target} QUIET IMPORTED_TARGET ${module})
  if(NOT ${target}_FOUND)
    message(FATAL_ERROR "Missing dependency '${module}': apt-get install ${debpkg} "
                        "(or run scripts/install-deps.sh, which installs everything)")
  endif()
endfunction()

vg_require(AVFORMAT libavformat libavformat-dev)
vg_require(AVCODEC libavcodec libavcodec-dev)
vg_require(SWSCALE libswscale libswscale-dev)
vg_require(AVUTIL libavutil libavutil-dev)
vg_require(UV libuv libuv1-dev)
vg_require(NANOMSG nanomsg libnanomsg-dev)
vg_require(OPENBLAS openblas libopenblas-dev)
vg_require(CJSON libcjson libcjson-dev)
vg_require(PCRE2 libpcre2-8 libpcre2-dev)
vg_require(CMOCKA cmocka libcmocka-dev)
vg_require(UTF8PROC libutf8proc libutf8proc-dev)
vg_require(LWS libwebsockets libwebsockets-dev)
vg_require(MOSQUITTO libmosquitto libmosquitto-dev)
vg_require(NATS libnats libnats-dev)

find_package(Threads REQUIRED)

# oneDNN (Debian libdnnl-dev 2.6) for the bf16 vision products. Optional: Debian ships no pkg-config
# file for it, so it is looked up by header and library; without it the engine uses its own
# kernels and OpenBLAS (VG_DNNL=OFF forces that).
option(VG_DNNL "Use oneDNN (libdnnl-dev) for bf16 matrix products when found" ON)
set(VG_HAVE_DNNL OFF)
if(VG_DNNL)
  find_path(DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.h)
  find_library(DNNL_LIBRARY dnnl)
  find_library(GOMP_LIBRARY NAMES gomp libgomp.so.1)
  if(DNNL_INCLUDE_DIR AND DNNL_LIBRARY AND GOMP_LIBRARY)
    set(VG_HAVE_DNNL ON)
    message(STATUS "oneDNN: ${DNNL_LIBRARY}")
  else()
    message(STATUS "oneDNN not found (apt-get install libdnnl-dev): bf16 vision products use "
                   "OpenBLAS")
  endif()
endif()
