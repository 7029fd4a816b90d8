# iSCSI target: login and full feature phase, whole sessions over a real loop and raw file exports.
set(iscsi_test_harness ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_iscsi_harness.c)
foreach(iscsi_test login session)
  luna_unit_test(test_iscsi_${iscsi_test}
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_iscsi_${iscsi_test}.c ${iscsi_test_harness}
    LIBS luna_iscsi)
endforeach()
