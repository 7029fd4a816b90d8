# iSCSI target: login and full feature phase, whole sessions over a real loop and raw file exports
# (test_session_util: the session's surroundings, shared with NBD; on test_block_util).
set(iscsi_test_harness ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_iscsi_harness.c
  ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_session_util.c ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_block_util.c)
foreach(iscsi_test login session)
  luna_unit_test(test_iscsi_${iscsi_test}
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_iscsi_${iscsi_test}.c ${iscsi_test_harness}
    LIBS luna_iscsi)
endforeach()
