# lunavm's device models and boot structures, without /dev/kvm: ACPI (tables, the PM1 power
# button), boot protocol and e820, vmlinux ELF kernels, MP table, 8250 UART, virtqueues over a fake guest memory,
# virtio-blk over a raw file, virtio-rng, snapshot=on overlays, the pid file, the monitor's
# commands (on a socket's dispatch and on the console's Ctrl-A c mux), the command line.
luna_unit_test(test_vmm
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_acpi.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_acpi_pm.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_boot.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_drive_snapshot.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_elf_kernel.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_mptable.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_pidfile.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_monitor.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_serial.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_virtqueue.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_virtio_blk.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_virtio_rng.c
          ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vmm_options.c
  LIBS luna_vmm)
