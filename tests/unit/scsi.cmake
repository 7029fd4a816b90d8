# The SCSI block-device core: CDBs against a raw-file bdev, status, sense and data checked.
luna_unit_test(test_scsi
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_scsi.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_scsi_compare_write.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_scsi_copy.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_scsi_mode_select.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_scsi_opcodes.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_scsi_persist.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_scsi_reservation.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_scsi_verify.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_scsi_harness.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_block_util.c
  LIBS luna_scsi luna_block)
