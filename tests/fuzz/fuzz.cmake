# Fuzz targets (see tests/fuzz/README.md).  Included from tests/CMakeLists.txt.
#
# Always: each target's source with replay_main.c, run by ctest over its seed
# corpus and checked-in crash reproducers (any compiler, sanitizers when
# LUNA_SANITIZE is on).  With LUNA_FUZZ (clang only): the libFuzzer binaries,
# with the protocol and block libraries instrumented for coverage.
set(luna_fuzz_dir ${CMAKE_CURRENT_SOURCE_DIR}/fuzz)

if(LUNA_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "LUNA_FUZZ needs clang: configure with -DCMAKE_C_COMPILER=clang")
  endif()
  set(luna_fuzz_sanitizers -fsanitize=address,undefined -fno-sanitize-recover=undefined
    -fno-omit-frame-pointer)
  # Coverage feedback must reach the code under test, not just the target;
  # whatever links these libraries then needs the sanitizer runtimes too.
  foreach(library luna_common luna_block luna_nbd luna_scsi luna_iscsi)
    target_compile_options(${library} PRIVATE -fsanitize=fuzzer-no-link ${luna_fuzz_sanitizers})
    target_link_options(${library} INTERFACE -fsanitize=address,undefined)
  endforeach()

  # The checkers are not under test: no coverage feedback (it would only reward the fuzzer for
  # reaching new lines of the audit) and no comparison tracing in their byte loops.
  add_library(luna_fuzz_checkers OBJECT
    ${luna_fuzz_dir}/nbd_reply_audit.c ${luna_fuzz_dir}/shadow_disk.c)
  target_compile_options(luna_fuzz_checkers PRIVATE ${luna_fuzz_sanitizers})
  add_library(luna_fuzz_bdev_contract OBJECT ${luna_fuzz_dir}/bdev_contract.c)
  target_compile_options(luna_fuzz_bdev_contract PRIVATE ${luna_fuzz_sanitizers})
endif()

# luna_fuzz_target(NAME LIBRARY [CHECKERS] [BDEV_CONTRACT] [SESSION_WORLD]): tests/fuzz/NAME.c
# replayed by ctest over corpus/NAME-without-fuzz_ and regressions/..., and the libFuzzer binary
# with LUNA_FUZZ.  CHECKERS links the NBD reply audit and shadow disk, BDEV_CONTRACT the checked
# bdev calls of the image-driver targets, SESSION_WORLD the exports and session driver of the
# protocol targets (fuzz_world.c: compiled as part of the target, so the libFuzzer build
# instruments it as it did when each target carried its own copy).
function(luna_fuzz_target name library)
  cmake_parse_arguments(ARG "CHECKERS;BDEV_CONTRACT;SESSION_WORLD" "" "" ${ARGN})
  string(REGEX REPLACE "^fuzz_" "" inputs ${name})
  set(sources ${luna_fuzz_dir}/${name}.c)
  if(ARG_SESSION_WORLD)
    list(APPEND sources ${luna_fuzz_dir}/fuzz_world.c)
  endif()
  set(checkers)
  set(checker_objects)
  if(ARG_CHECKERS)
    list(APPEND checkers ${luna_fuzz_dir}/nbd_reply_audit.c ${luna_fuzz_dir}/shadow_disk.c)
    list(APPEND checker_objects luna_fuzz_checkers)
  endif()
  if(ARG_BDEV_CONTRACT)
    list(APPEND checkers ${luna_fuzz_dir}/bdev_contract.c)
    list(APPEND checker_objects luna_fuzz_bdev_contract)
  endif()
  add_executable(${name}_replay ${sources} ${checkers} ${luna_fuzz_dir}/replay_main.c)
  target_link_libraries(${name}_replay PRIVATE ${library})
  set_target_properties(${name}_replay PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  # Regressions only once a crash was found and kept (git keeps no empty directory).
  set(replay_inputs ${luna_fuzz_dir}/corpus/${inputs})
  if(EXISTS ${luna_fuzz_dir}/regressions/${inputs})
    list(APPEND replay_inputs ${luna_fuzz_dir}/regressions/${inputs})
  endif()
  add_test(NAME unit.${name}_replay COMMAND ${name}_replay ${replay_inputs})
  set_tests_properties(unit.${name}_replay PROPERTIES LABELS unit TIMEOUT 300)

  if(LUNA_FUZZ)
    set(objects)
    foreach(object IN LISTS checker_objects)
      list(APPEND objects $<TARGET_OBJECTS:${object}>)
    endforeach()
    add_executable(${name} ${sources} ${objects})
    target_compile_options(${name} PRIVATE -fsanitize=fuzzer ${luna_fuzz_sanitizers})
    target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(${name} PRIVATE ${library})
    set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)
  endif()
endfunction()

luna_fuzz_target(fuzz_nbd_session luna_nbd CHECKERS SESSION_WORLD)
luna_fuzz_target(fuzz_iscsi_session luna_iscsi SESSION_WORLD)
luna_fuzz_target(fuzz_qcow2_open luna_block BDEV_CONTRACT)
luna_fuzz_target(fuzz_foreign_open luna_block BDEV_CONTRACT)
luna_fuzz_target(fuzz_lvm_metadata luna_block)
