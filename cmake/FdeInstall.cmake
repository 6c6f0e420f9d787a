# The install layout (docs/install.md). Included once from the top-level CMakeLists.txt; the
# functions are called from the directories that define the targets and files.
#
# With CMAKE_INSTALL_PREFIX=/usr (what distributions and the "release" preset use):
#   /usr/sbin/{fde-verifierd,fde-admin,fde-agent}        system daemons and root-only tools
#   /usr/bin/fde-image                                   runs as an ordinary user
#   /etc/fde-verifier/fde-verifierd.toml                 GNUInstallDirs maps prefix /usr to /etc
#   /usr/lib/systemd/system/fde-verifierd.service        ExecStart= and paths rewritten to match
#   /usr/lib/sysusers.d/fde-verifierd.conf, /usr/lib/tmpfiles.d/fde-verifierd.conf
#   /usr/lib/dracut/modules.d/90fde-agent/               every file module-setup.sh uses
#   /usr/share/doc/fde-verifier/                         the operator docs
#   /usr/lib/debug/usr/{s,}bin/<name>.debug              component "debug" only
# Components: verifier, agent, image, debug (the last is left out of a plain install).
include(GNUInstallDirs)

option(FDE_INSTALL_SPLIT_DEBUG
       "Install stripped executables and put their debug info in <name>.debug files (component debug)" ON)
if(FDE_INSTALL_SPLIT_DEBUG AND NOT CMAKE_OBJCOPY)
  message(FATAL_ERROR "FDE_INSTALL_SPLIT_DEBUG needs objcopy (binutils); or configure with -DFDE_INSTALL_SPLIT_DEBUG=OFF")
endif()

set(FDE_CONFIG_DIR "${CMAKE_INSTALL_FULL_SYSCONFDIR}/fde-verifier")
set(FDE_DOC_DIR "${CMAKE_INSTALL_DATAROOTDIR}/doc/fde-verifier")
set(FDE_SYSTEMD_UNIT_DIR "lib/systemd/system")
set(FDE_SYSUSERS_DIR "lib/sysusers.d")
set(FDE_TMPFILES_DIR "lib/tmpfiles.d")
set(FDE_DRACUT_MODULE_DIR "lib/dracut/modules.d/90fde-agent")
set(FDE_DEBUG_DIR "lib/debug")
set(fde_install_generated "${PROJECT_BINARY_DIR}/install-files")

if(FDE_WITH_SIM)
  message(STATUS "FDE_WITH_SIM=ON: the installed fde-agent carries the simulated platform; production "
                 "installs use -DFDE_WITH_SIM=OFF (cmake --preset release)")
endif()

# The files name their installed paths as they are for prefix /usr; an install under another
# prefix would install a unit that runs a binary that is not there. So the paths are written
# into the installed copies, and an install under a prefix other than the configured one
# (cmake --install --prefix) is refused.
install(CODE "
  if(NOT CMAKE_INSTALL_PREFIX STREQUAL \"${CMAKE_INSTALL_PREFIX}\")
    message(FATAL_ERROR \"this tree was configured for prefix ${CMAKE_INSTALL_PREFIX}: its unit and dracut module \"
                        \"name paths under it. Configure with -DCMAKE_INSTALL_PREFIX=\${CMAKE_INSTALL_PREFIX} instead of \"
                        \"cmake --install --prefix.\")
  endif()" ALL_COMPONENTS)

# fde_install_program(TARGET DESTINATION_VAR COMPONENT): installs TARGET's executable into
# CMAKE_INSTALL_<DESTINATION_VAR> (SBINDIR or BINDIR). With FDE_INSTALL_SPLIT_DEBUG, every
# link also writes a stripped copy (with a .gnu_debuglink to its debug file) and the debug
# info (objcopy --only-keep-debug) beside the target; those are what get installed.
function(fde_install_program target dir_var component)
  set(destination "${CMAKE_INSTALL_${dir_var}}")
  if(NOT FDE_INSTALL_SPLIT_DEBUG)
    install(TARGETS ${target} RUNTIME DESTINATION ${destination} COMPONENT ${component})
    return()
  endif()
  set(out "${CMAKE_CURRENT_BINARY_DIR}/installed")
  set(stripped "${out}/${target}")
  set(debug "${out}/${target}.debug")
  add_custom_command(TARGET ${target} POST_BUILD
    COMMAND ${CMAKE_COMMAND} -E make_directory ${out}
    COMMAND ${CMAKE_OBJCOPY} --only-keep-debug $<TARGET_FILE:${target}> ${debug}
    COMMAND ${CMAKE_OBJCOPY} --strip-all --add-gnu-debuglink=${debug} $<TARGET_FILE:${target}> ${stripped}
    COMMENT "Splitting ${target} into a stripped executable and ${target}.debug"
    VERBATIM)
  install(PROGRAMS ${stripped} DESTINATION ${destination} COMPONENT ${component})
  # gdb looks for the debuglink name under <debug-file-directory>/<the binary's directory>.
  install(FILES ${debug} DESTINATION "${FDE_DEBUG_DIR}${CMAKE_INSTALL_FULL_${dir_var}}"
          COMPONENT debug EXCLUDE_FROM_ALL)
endfunction()

# fde_rewrite_paths(SOURCE OUTPUT OLD NEW [OLD NEW ...]): OUTPUT is SOURCE with each OLD text
# replaced by NEW; every OLD must occur in SOURCE, so an edit of SOURCE cannot silently leave
# an installed path behind. Re-runs when SOURCE changes.
function(fde_rewrite_paths source output)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${source}")
  file(READ "${source}" text)
  set(pairs ${ARGN})
  list(LENGTH pairs count)
  math(EXPR last "${count} - 1")
  foreach(i RANGE 0 ${last} 2)
    math(EXPR j "${i} + 1")
    list(GET pairs ${i} old)
    list(GET pairs ${j} new)
    string(FIND "${text}" "${old}" at)
    if(at EQUAL -1)
      message(FATAL_ERROR "${source} no longer contains \"${old}\": update cmake/FdeInstall.cmake")
    endif()
    string(REPLACE "${old}" "${new}" text "${text}")
  endforeach()
  file(WRITE "${output}.tmp" "${text}")
  configure_file("${output}.tmp" "${output}" COPYONLY)
  file(REMOVE "${output}.tmp")
endfunction()

# The dracut module: module-setup.sh and every file it takes from $moddir, derived from the
# script itself so that a new hook cannot be left out of the install (dracut aborts on a
# missing hook file). Every file of DIR must be used, and fde-image's embedded copy of the
# runtime files (image-builder) must be the same set (fde_check_dracut_embedding).
function(fde_dracut_module_files dir out_var)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${dir}/module-setup.sh")
  file(READ "${dir}/module-setup.sh" text)
  string(REGEX MATCHALL "\\$\\{?moddir\\}?/[A-Za-z0-9._-]+" refs "${text}")
  set(files "")
  foreach(ref IN LISTS refs)
    string(REGEX REPLACE "^.*/" "" name "${ref}")
    if(NOT EXISTS "${dir}/${name}")
      message(FATAL_ERROR "${dir}/module-setup.sh uses \$moddir/${name}, which does not exist")
    endif()
    list(APPEND files "${name}")
  endforeach()
  list(REMOVE_DUPLICATES files)
  list(SORT files)
  if(NOT files)
    message(FATAL_ERROR "found no \$moddir/ file in ${dir}/module-setup.sh")
  endif()
  set(${out_var} ${files} PARENT_SCOPE)
endfunction()

function(fde_install_dracut_module dir)
  fde_dracut_module_files("${dir}" files)
  file(GLOB present RELATIVE "${dir}" "${dir}/*")
  list(REMOVE_ITEM present module-setup.sh ${files})
  if(present)
    message(FATAL_ERROR "${dir}: ${present} not used by module-setup.sh; the module would carry it for nothing")
  endif()
  # module-setup.sh falls back to the agent binary and configuration at their installed paths.
  set(setup "${fde_install_generated}/dracut/module-setup.sh")
  fde_rewrite_paths("${dir}/module-setup.sh" "${setup}"
    "\${FDE_AGENT_BINARY:-/usr/sbin/fde-agent}" "\${FDE_AGENT_BINARY:-${CMAKE_INSTALL_FULL_SBINDIR}/fde-agent}"
    "\${FDE_AGENT_CONFIG:-/etc/fde/agent.conf}" "\${FDE_AGENT_CONFIG:-${CMAKE_INSTALL_FULL_SYSCONFDIR}/fde/agent.conf}")
  install(PROGRAMS "${setup}" DESTINATION ${FDE_DRACUT_MODULE_DIR} COMPONENT agent)
  foreach(name IN LISTS files)
    if(name MATCHES "\\.sh$")
      install(PROGRAMS "${dir}/${name}" DESTINATION ${FDE_DRACUT_MODULE_DIR} COMPONENT agent)
    else()
      install(FILES "${dir}/${name}" DESTINATION ${FDE_DRACUT_MODULE_DIR} COMPONENT agent)
    endif()
  endforeach()
endfunction()

# fde-image appends the same runtime files to an initramfs (image-builder's
# fde_dracut_runtime_files); they must be the ones module-setup.sh installs.
function(fde_check_dracut_embedding dracut_dir image_builder_dir)
  fde_dracut_module_files("${dracut_dir}" module_files)
  get_directory_property(embedded DIRECTORY "${image_builder_dir}" DEFINITION fde_dracut_runtime_files)
  set(embedded_names "")
  foreach(path IN LISTS embedded)
    get_filename_component(name "${path}" NAME)
    list(APPEND embedded_names "${name}")
  endforeach()
  list(SORT embedded_names)
  if(NOT embedded_names STREQUAL module_files)
    message(FATAL_ERROR "fde-image embeds [${embedded_names}] but module-setup.sh installs [${module_files}]")
  endif()
endfunction()

# fde-verifierd's unit, user, directories, default configuration and documentation.
function(fde_install_verifier_files)
  set(pkg "${PROJECT_SOURCE_DIR}/packaging")
  set(gen "${fde_install_generated}/verifier")
  set(full_doc_dir "${CMAKE_INSTALL_PREFIX}/${FDE_DOC_DIR}")
  fde_rewrite_paths("${pkg}/fde-verifierd.service" "${gen}/fde-verifierd.service"
    "ExecStart=/usr/sbin/fde-verifierd" "ExecStart=${CMAKE_INSTALL_FULL_SBINDIR}/fde-verifierd"
    "ExecReload=+/usr/sbin/fde-admin" "ExecReload=+${CMAKE_INSTALL_FULL_SBINDIR}/fde-admin"
    "/etc/fde-verifier" "${FDE_CONFIG_DIR}"
    "file:///usr/share/doc/fde-verifier/" "file://${full_doc_dir}/")
  fde_rewrite_paths("${pkg}/tmpfiles.d/fde-verifierd.conf" "${gen}/tmpfiles.conf"
    "/etc/fde-verifier" "${FDE_CONFIG_DIR}")
  fde_rewrite_paths("${pkg}/fde-verifierd.toml" "${gen}/fde-verifierd.toml"
    "/etc/fde-verifier" "${FDE_CONFIG_DIR}")
  install(FILES "${gen}/fde-verifierd.service" DESTINATION ${FDE_SYSTEMD_UNIT_DIR} COMPONENT verifier)
  install(FILES "${pkg}/sysusers.d/fde-verifierd.conf" DESTINATION ${FDE_SYSUSERS_DIR} COMPONENT verifier)
  install(FILES "${gen}/tmpfiles.conf" DESTINATION ${FDE_TMPFILES_DIR} RENAME fde-verifierd.conf
          COMPONENT verifier)
  # An absolute destination: GNUInstallDirs' relative SYSCONFDIR ("etc") would put it under
  # /usr/etc for prefix /usr.
  install(FILES "${gen}/fde-verifierd.toml" DESTINATION "${FDE_CONFIG_DIR}" COMPONENT verifier)
  install(FILES "${gen}/fde-verifierd.toml" "${PROJECT_SOURCE_DIR}/docs/fde-verifierd.md"
                "${PROJECT_SOURCE_DIR}/docs/fde-admin.md" "${PROJECT_SOURCE_DIR}/docs/enrollment-bundle.md"
                "${PROJECT_SOURCE_DIR}/docs/install.md" "${PROJECT_SOURCE_DIR}/docs/operator-guide.md"
                "${PROJECT_SOURCE_DIR}/docs/protocol.md" "${PROJECT_SOURCE_DIR}/docs/threat-model.md"
                "${PROJECT_SOURCE_DIR}/docs/reference-values.md" "${PROJECT_SOURCE_DIR}/docs/virtcca-platform.md"
          DESTINATION ${FDE_DOC_DIR} COMPONENT verifier)
endfunction()
