# lunavm's device models and boot structures, without /dev/kvm: ACPI, boot protocol and
# e820, MP table, 8250 UART, virtqueues over a fake guest memory, virtio-blk over a
# raw file, the monitor's commands, the command line.
luna_unit_test(test_vmm
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_acpi.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_boot.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_mptable.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_monitor.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_serial.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_virtqueue.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_virtio_blk.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_options.c
  LIBS luna_vmm)
