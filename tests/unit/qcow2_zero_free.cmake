# qcow2 zeroes and discards that free clusters (QEMU's semantics) and the wait for transfers.
luna_unit_test(test_qcow2_zero_free
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_qcow2_zero_free.c
  LIBS luna_block)
