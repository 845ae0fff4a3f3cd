# `cmake --install`: the stage libraries, their headers, the tools, an exported
# CMake package (find_package(evl) -> evl::cache, evl::scores, evl::train, ...)
# and pkg-config files for the LibTorch-free libraries (evl-cache, evl-scores).
# Layout under the prefix:
#   lib/libevl_*.a, bin/evl_*, include/evl/<stage>/*.h (+ include/evl/evl/version.h),
#   lib/cmake/evl/evlConfig.cmake, lib/pkgconfig/evl-{cache,scores}.pc
# Headers include each other as "cache/cache.h", so include/evl is the include
# directory consumers get (with include/, so <evl/cache/cache.h> works too).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# Every static library and tool the stage folders define is installed (found
# here, so a library added to a stage later is exported without a list to
# keep up to date). Exported name of each library: evl_cache -> evl::cache.
set(evl_install_libs)
set(evl_install_tools)
foreach(stage common cache extract train evaluate ensemble)
  get_property(targets DIRECTORY ${PROJECT_SOURCE_DIR}/${stage} PROPERTY BUILDSYSTEM_TARGETS)
  foreach(t IN LISTS targets)
    get_target_property(type ${t} TYPE)
    if(type STREQUAL "STATIC_LIBRARY" AND t MATCHES "^evl_")
      list(APPEND evl_install_libs ${t})
    elseif(type STREQUAL "EXECUTABLE" AND t MATCHES "^evl_.*_bin$")
      list(APPEND evl_install_tools ${t})
    endif()
  endforeach()
endforeach()

set(evl_include_dir ${CMAKE_INSTALL_INCLUDEDIR}/evl)
foreach(lib IN LISTS evl_install_libs)
  string(REGEX REPLACE "^evl_" "" export_name ${lib})
  set_target_properties(${lib} PROPERTIES EXPORT_NAME ${export_name})
  # The stage CMakeLists give the source tree as include directory; installed
  # targets get the installed headers instead.
  get_target_property(dirs ${lib} INTERFACE_INCLUDE_DIRECTORIES)
  set(wrapped)
  foreach(d IN LISTS dirs)
    list(APPEND wrapped "$<BUILD_INTERFACE:${d}>")
  endforeach()
  list(APPEND wrapped "$<INSTALL_INTERFACE:${evl_include_dir}>"
                      "$<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>")
  set_target_properties(${lib} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${wrapped}")
endforeach()

install(TARGETS ${evl_install_libs} EXPORT evlTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS ${evl_install_tools} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
foreach(stage common cache extract train evaluate ensemble)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${stage}/ DESTINATION ${evl_include_dir}/${stage}
          FILES_MATCHING PATTERN "*.h")
endforeach()
install(FILES ${CMAKE_BINARY_DIR}/generated/evl/version.h DESTINATION ${evl_include_dir}/evl)
install(FILES ${PROJECT_SOURCE_DIR}/cache/FORMAT.md ${PROJECT_SOURCE_DIR}/evaluate/SCORES.md
        DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/evl)

install(EXPORT evlTargets NAMESPACE evl:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/evl)
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/evlConfig.cmake.in
  ${CMAKE_BINARY_DIR}/evlConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/evl)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/evlConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/evlConfig.cmake ${CMAKE_BINARY_DIR}/evlConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/evl)

# pkg-config: static libraries, so Libs lists what they need in link order.
# Relocatable: prefix is found from the .pc file's own place (${pcfiledir}),
# so `cmake --install --prefix DIR` works with any DIR.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(EVL_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  set(EVL_PC_PREFIX "\${pcfiledir}/..")
  string(REPLACE "/" ";" libdir_parts "${CMAKE_INSTALL_LIBDIR}")
  foreach(part IN LISTS libdir_parts)
    string(APPEND EVL_PC_PREFIX "/..")
  endforeach()
endif()
foreach(pc evl-cache evl-scores)
  configure_file(${CMAKE_CURRENT_LIST_DIR}/${pc}.pc.in ${CMAKE_BINARY_DIR}/${pc}.pc @ONLY)
  install(FILES ${CMAKE_BINARY_DIR}/${pc}.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endforeach()
