# Block layer: aio contexts, every bdev op on both engines and all cache modes, exports,
# and what reaches the kernel (syscall_fakes interposes fdatasync, fallocate and close).
set(block_test_util ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_block_util.c)
foreach(block_test aio raw direct concurrency host_device export overlay syscall_fakes)
  luna_unit_test(test_block_${block_test}
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_block_${block_test}.c ${block_test_util}
    LIBS luna_block)
endforeach()
