# NBD protocol: wire encoding, then whole sessions over a real loop and raw file exports
# (test_session_util: the session's surroundings, shared with iSCSI; on test_block_util).
set(nbd_test_harness ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_nbd_harness.c
  ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_session_util.c ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_block_util.c)
luna_unit_test(test_nbd_wire
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_nbd_wire.c
  LIBS luna_nbd)
foreach(nbd_test handshake transmission)
  luna_unit_test(test_nbd_${nbd_test}
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_nbd_${nbd_test}.c ${nbd_test_harness}
    LIBS luna_nbd)
endforeach()
