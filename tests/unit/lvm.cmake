# LVM in user space: metadata parser, mapping, labels and metadata areas, the device-mapper guard.
luna_unit_test(test_lvm
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_lvm.c
  LIBS luna_block)
target_compile_definitions(test_lvm PRIVATE LVM_FIXTURES="${CMAKE_CURRENT_SOURCE_DIR}/unit/lvm-fixtures")
