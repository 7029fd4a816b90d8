# Test programs the integration scripts run against a live lunad.
# libnbd_client: multi-conn, pipelining, holes, trim/zero, FUA and error checks on libnbd.
add_executable(libnbd_client ${CMAKE_CURRENT_SOURCE_DIR}/integration/libnbd_client.c)
target_link_libraries(libnbd_client PRIVATE PkgConfig::LIBNBD)
set_target_properties(libnbd_client PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
