# Integration tests: shell scripts driving lunad with real clients.
# luna_integration_test(NAME SCRIPT): runs tests/integration/SCRIPT with LUNAD set.
function(luna_integration_test name script)
  add_test(NAME integration.${name}
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/${script})
  set_tests_properties(integration.${name} PROPERTIES
    LABELS integration
    TIMEOUT 600
    ENVIRONMENT "LUNAD=$<TARGET_FILE:lunad>;LUNA_TEST_BUILD=${CMAKE_BINARY_DIR};LUNA_TEST_BIN=${CMAKE_BINARY_DIR}/tests")
endfunction()

file(GLOB integration_scripts RELATIVE ${CMAKE_CURRENT_SOURCE_DIR}/integration
  ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_*.sh)
foreach(script IN LISTS integration_scripts)
  string(REGEX REPLACE "^test_(.*)\\.sh$" "\\1" name ${script})
  luna_integration_test(${name} ${script})
endforeach()
# Seven nested-KVM boots under TCG, and up to two reruns of the steps not done when the outer
# kernel locks up (test_lunavm.sh): about 3 minutes, 6 at worst; a hang stops at 420 s per try.
set_tests_properties(integration.lunavm PROPERTIES TIMEOUT 900)
