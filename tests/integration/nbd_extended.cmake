# A standalone NBD client checking extended headers (Debian's libnbd 1.14 cannot).
# Only built here; run as: nbd_extended_client HOST PORT EXPORT against a running lunad.
add_executable(nbd_extended_client ${CMAKE_CURRENT_SOURCE_DIR}/integration/nbd_extended_client.c)
set_target_properties(nbd_extended_client PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
