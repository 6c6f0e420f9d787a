# fde_require_test_data(DIR): stops the configuration when a file listed in DIR/SHA256SUMS
# (sha256sum format: "<64 hex>  <relative path>") is missing, so a tree without its test data
# fails loudly instead of skipping tests. The contents are checked by the CTest test
# test_data_integrity; configuring only checks presence, which is cheap.
function(fde_require_test_data dir)
  set(list_file "${dir}/SHA256SUMS")
  if(NOT EXISTS "${list_file}")
    message(FATAL_ERROR "test data missing: ${list_file} does not exist (the repository carries it; "
                        "is this a partial copy of the source tree?)")
  endif()
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${list_file}")
  file(STRINGS "${list_file}" lines)
  set(missing "")
  set(count 0)
  foreach(line IN LISTS lines)
    if(NOT line MATCHES "^[0-9a-f]+  (.+)$")
      message(FATAL_ERROR "${list_file}: malformed line: ${line}")
    endif()
    math(EXPR count "${count} + 1")
    if(NOT EXISTS "${dir}/${CMAKE_MATCH_1}")
      list(APPEND missing "${CMAKE_MATCH_1}")
    endif()
  endforeach()
  if(count EQUAL 0)
    message(FATAL_ERROR "${list_file} lists no files")
  endif()
  if(missing)
    list(JOIN missing "\n  " missing_text)
    message(FATAL_ERROR "test data missing in ${dir}:\n  ${missing_text}\n"
                        "The tests read these files; restore them (git checkout -- test/data) "
                        "or configure with -DFDE_BUILD_TESTS=OFF to build without tests.")
  endif()
endfunction()
