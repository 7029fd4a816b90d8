luna_unit_test(test_send_queue
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_send_queue.c
  LIBS luna_common)

luna_unit_test(test_data_buffer
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_data_buffer.c
  LIBS luna_common)
