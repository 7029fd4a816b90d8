# Fuzz targets (see tests/fuzz/README.md).  Included from tests/CMakeLists.txt.
#
# Always: each target's source with replay_main.c, run by ctest over its seed
# corpus and checked-in crash reproducers (any compiler, sanitizers when
# LUNA_SANITIZE is on).  With LUNA_FUZZ (clang only): the libFuzzer binaries,
# with the protocol and block libraries instrumented for coverage.
set(luna_fuzz_dir ${CMAKE_CURRENT_SOURCE_DIR}/fuzz)

add_executable(fuzz_nbd_session_replay
  ${luna_fuzz_dir}/fuzz_nbd_session.c ${luna_fuzz_dir}/nbd_reply_audit.c ${luna_fuzz_dir}/shadow_disk.c
  ${luna_fuzz_dir}/replay_main.c)
target_link_libraries(fuzz_nbd_session_replay PRIVATE luna_nbd)
set_target_properties(fuzz_nbd_session_replay PROPERTIES
  RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
add_test(NAME unit.fuzz_nbd_session_replay
  COMMAND fuzz_nbd_session_replay
    ${luna_fuzz_dir}/corpus/nbd_session ${luna_fuzz_dir}/regressions/nbd_session)
set_tests_properties(unit.fuzz_nbd_session_replay PROPERTIES LABELS unit TIMEOUT 300)

add_executable(fuzz_qcow2_open_replay ${luna_fuzz_dir}/fuzz_qcow2_open.c ${luna_fuzz_dir}/replay_main.c)
target_link_libraries(fuzz_qcow2_open_replay PRIVATE luna_block)
set_target_properties(fuzz_qcow2_open_replay PROPERTIES
  RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
add_test(NAME unit.fuzz_qcow2_open_replay
  COMMAND fuzz_qcow2_open_replay
    ${luna_fuzz_dir}/corpus/qcow2_open ${luna_fuzz_dir}/regressions/qcow2_open)
set_tests_properties(unit.fuzz_qcow2_open_replay PROPERTIES LABELS unit TIMEOUT 300)

if(LUNA_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "LUNA_FUZZ needs clang: configure with -DCMAKE_C_COMPILER=clang")
  endif()
  set(luna_fuzz_sanitizers -fsanitize=address,undefined -fno-sanitize-recover=undefined
    -fno-omit-frame-pointer)
  # Coverage feedback must reach the code under test, not just the target;
  # whatever links these libraries then needs the sanitizer runtimes too.
  foreach(library luna_common luna_block luna_nbd)
    target_compile_options(${library} PRIVATE -fsanitize=fuzzer-no-link ${luna_fuzz_sanitizers})
    target_link_options(${library} INTERFACE -fsanitize=address,undefined)
  endforeach()

  # The checkers are not under test: no coverage feedback (it would only reward the fuzzer for
  # reaching new lines of the audit) and no comparison tracing in their byte loops.
  add_library(luna_fuzz_checkers OBJECT
    ${luna_fuzz_dir}/nbd_reply_audit.c ${luna_fuzz_dir}/shadow_disk.c)
  target_compile_options(luna_fuzz_checkers PRIVATE ${luna_fuzz_sanitizers})

  add_executable(fuzz_nbd_session ${luna_fuzz_dir}/fuzz_nbd_session.c
    $<TARGET_OBJECTS:luna_fuzz_checkers>)
  target_compile_options(fuzz_nbd_session PRIVATE -fsanitize=fuzzer ${luna_fuzz_sanitizers})
  target_link_options(fuzz_nbd_session PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_nbd_session PRIVATE luna_nbd)
  set_target_properties(fuzz_nbd_session PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)

  add_executable(fuzz_qcow2_open ${luna_fuzz_dir}/fuzz_qcow2_open.c)
  target_compile_options(fuzz_qcow2_open PRIVATE -fsanitize=fuzzer ${luna_fuzz_sanitizers})
  target_link_options(fuzz_qcow2_open PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_qcow2_open PRIVATE luna_block)
  set_target_properties(fuzz_qcow2_open PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)
endif()
