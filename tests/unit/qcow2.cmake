# qcow2: the on-disk format (pure functions: no I/O, no threads).
luna_unit_test(test_qcow2_format
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_qcow2_format.c
  LIBS luna_block)
luna_unit_test(test_qcow2_compress
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_qcow2_compress.c
  LIBS luna_block)
# qcow2_check: what luna-img check counts, says and repairs.
luna_unit_test(test_qcow2_check
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_qcow2_check.c
  LIBS luna_block)
