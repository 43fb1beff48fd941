# What `cmake --install` puts on a system, and the Debian packages CPack makes of it.
#
#   headers      include/ring3/...                      (component dev)
#   libraries    lib/<multiarch>/libring3_<layer>.so.N  (component runtime; the .so link: dev)
#   tools        bin/ring3, bin/ring3d                  (component runtime)
#   CMake        lib/<multiarch>/cmake/ring3/           (component dev): find_package(ring3)
#                gives ring3::ring3 (every layer) and one target per layer (ring3::core,
#                ring3::pci, ..., ring3::nvme)
#   pkg-config   lib/<multiarch>/pkgconfig/ring3.pc     (component dev)
#
# The public headers are the API; a library's SONAME changes with PROJECT_VERSION_MAJOR. An
# install is meant to be of the shared libraries (-DBUILD_SHARED_LIBS=ON, as scripts/stage-install
# configures it); a static install works too, its users then also need fmt's, nlohmann-json's and
# cpptoml's CMake packages.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The libraries of the install, each with the name its layer has in ring3::<name>.
set(ring3_layers
    ring3_core:core ring3_pci:pci ring3_dma:dma ring3_irq:irq ring3_broker_client:broker_client
    ring3_vfio_user:vfio_user ring3_broker_policy:broker_policy ring3_device:device
    ring3_block:block ring3_net:net
    ring3_nvme:nvme ring3_virtio:virtio ring3_e1000e:e1000e ring3_block_drivers:block_drivers
    ring3_net_open:net_open ring3_emu:emu)
set(ring3_layer_targets)
foreach(entry IN LISTS ring3_layers)
  string(REPLACE ":" ";" pair "${entry}")
  list(GET pair 0 target)
  list(GET pair 1 name)
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${name} VERSION ${PROJECT_VERSION}
                                             SOVERSION ${PROJECT_VERSION_MAJOR})
  list(APPEND ring3_layer_targets ${target})
endforeach()

# ring3::ring3: everything a driver or an application may use.
add_library(ring3_all INTERFACE)
set_target_properties(ring3_all PROPERTIES EXPORT_NAME ring3)
target_link_libraries(ring3_all INTERFACE ${ring3_layer_targets})
add_library(ring3::ring3 ALIAS ring3_all)

install(TARGETS ${ring3_layer_targets} ring3_all EXPORT ring3Targets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT dev
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/ring3 DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        COMPONENT dev)
if(TARGET ring3)
  install(TARGETS ring3 RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
  install(TARGETS ring3d RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
  install(FILES ${PROJECT_SOURCE_DIR}/dist/ring3d.toml
          DESTINATION ${CMAKE_INSTALL_FULL_SYSCONFDIR}/ring3 COMPONENT runtime)
  install(FILES ${PROJECT_SOURCE_DIR}/dist/ring3d.service
          DESTINATION lib/systemd/system COMPONENT runtime)
endif()

set(ring3_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/ring3)
install(EXPORT ring3Targets NAMESPACE ring3:: DESTINATION ${ring3_cmake_dir} COMPONENT dev)
get_target_property(ring3_core_type ring3_core TYPE)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/ring3Config.cmake.in
                              ${PROJECT_BINARY_DIR}/ring3Config.cmake
                              INSTALL_DESTINATION ${ring3_cmake_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/ring3ConfigVersion.cmake
                                 COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/ring3Config.cmake ${PROJECT_BINARY_DIR}/ring3ConfigVersion.cmake
        DESTINATION ${ring3_cmake_dir} COMPONENT dev)

# pkg-config: the libraries in link order (users before what they use).
set(ring3_pc_libs "")
foreach(target IN ITEMS ring3_emu ring3_net_open ring3_block_drivers ring3_nvme
                        ring3_virtio ring3_e1000e ring3_net ring3_block ring3_device
                        ring3_vfio_user ring3_broker_client
                        ring3_irq ring3_dma ring3_pci ring3_core)
  string(APPEND ring3_pc_libs " -l${target}")
endforeach()
configure_file(${PROJECT_SOURCE_DIR}/cmake/ring3.pc.in ${PROJECT_BINARY_DIR}/ring3.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/ring3.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig
        COMPONENT dev)

# Debian packages (cpack -G DEB): ring3 (tools and shared libraries), ring3-dev and python3-ring3.
set(CPACK_PACKAGE_NAME ring3)
set(CPACK_PACKAGE_VENDOR "ring3")
set(CPACK_PACKAGE_CONTACT "ring3 developers <ring3@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "PCI device drivers as ordinary user-space processes")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_GENERATOR DEB)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL runtime dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION devel)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME ring3)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_RUNTIME_DESCRIPTION
    "PCI device drivers as ordinary user-space processes\n The ring3 tool (enumerate, bind, dump BARs, drive NVMe, virtio and e1000e devices,\n benchmark them), the ring3d I/O server and ring3's shared libraries.")
# The policy is the administrator's: an upgrade keeps their edits (a conffile).
file(WRITE ${PROJECT_BINARY_DIR}/debian-runtime/conffiles
     "${CMAKE_INSTALL_FULL_SYSCONFDIR}/ring3/ring3d.toml\n")
set(CPACK_DEBIAN_RUNTIME_PACKAGE_CONTROL_EXTRA ${PROJECT_BINARY_DIR}/debian-runtime/conffiles)
set(CPACK_DEBIAN_DEV_PACKAGE_NAME ring3-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "ring3 (= ${PROJECT_VERSION}), libfmt-dev")
set(CPACK_DEBIAN_DEV_DESCRIPTION
    "ring3 development files\n Headers, the CMake package (find_package(ring3)) and the pkg-config file for\n writing user-space PCI drivers with ring3.")
if(TARGET ring3_python)  # python/: the ring3 module for Debian's python3
  list(APPEND CPACK_COMPONENTS_ALL python)
  string(REPLACE "." ";" python_version "${RING3_PYTHON_VERSION}")
  list(GET python_version 0 python_major)
  list(GET python_version 1 python_minor)
  math(EXPR python_next_minor "${python_minor} + 1")
  set(CPACK_DEBIAN_PYTHON_PACKAGE_NAME python3-ring3)
  set(CPACK_DEBIAN_PYTHON_PACKAGE_SECTION python)
  # dpkg-shlibdeps cannot resolve the module's libring3_*.so.0 (they are in the ring3 package,
  # which ships no shlibs file): the dependencies are spelled out.
  set(CPACK_DEBIAN_PYTHON_PACKAGE_SHLIBDEPS OFF)
  set(CPACK_DEBIAN_PYTHON_PACKAGE_GENERATE_SHLIBS OFF)  # a module, not a library
  set(CPACK_DEBIAN_PYTHON_PACKAGE_DEPENDS
      "ring3 (= ${PROJECT_VERSION}), libc6 (>= 2.34), libstdc++6 (>= 11), libgcc-s1 (>= 3.4), python3 (>= ${RING3_PYTHON_VERSION}), python3 (<< ${python_major}.${python_next_minor})")
  set(CPACK_DEBIAN_PYTHON_DESCRIPTION
      "Python bindings of ring3\n The ring3 module: open a PCI device, map its BARs, DMA buffers with the buffer\n protocol, interrupts (also awaitable in asyncio), for prototyping drivers.")
endif()
include(CPack)
