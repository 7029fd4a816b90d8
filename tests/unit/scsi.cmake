# The SCSI block-device core: CDBs against a raw-file bdev, status, sense and data checked.
luna_unit_test(test_scsi
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_scsi.c ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_block_util.c
  LIBS luna_scsi luna_block)
