# Configuration: INI files (with fixtures), value parsers, the command line.
foreach(config_test ini values cli)
  luna_unit_test(test_config_${config_test}
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_config_${config_test}.c
    LIBS luna_config)
  target_compile_definitions(test_config_${config_test} PRIVATE
    LUNA_CONFIG_FIXTURES="${CMAKE_CURRENT_SOURCE_DIR}/unit/config-fixtures"
    LUNA_EXAMPLE_CONFIG="${PROJECT_SOURCE_DIR}/deploy/examples/lunad.ini")
endforeach()
