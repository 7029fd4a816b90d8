# luna-img: qemu-img's size syntax and -o option lists.
luna_unit_test(test_img_util
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_img_util.c
  LIBS luna_img_util)
