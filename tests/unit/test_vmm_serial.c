/* The 8250 UART as Linux's driver probes and drives it. */
#include <criterion/criterion.h>
#include <string.h>

#include "vmm/serial_8250.h"

struct recorder {
    bool level;
    unsigned rising_edges;
    char output[64];
    size_t output_length;
    unsigned receive_ready;
};

static void record_irq(void *opaque, bool level)
{
    struct recorder *recorder = opaque;
    if (level && !recorder->level)
        recorder->rising_edges++;
    recorder->level = level;
}

static void record_output(void *opaque, uint8_t byte)
{
    struct recorder *recorder = opaque;
    if (recorder->output_length < sizeof(recorder->output))
        recorder->output[recorder->output_length++] = (char)byte;
}

static void record_ready(void *opaque)
{
    struct recorder *recorder = opaque;
    recorder->receive_ready++;
}

static struct serial_8250 uart;
static struct recorder recorder;

static void setup(void)
{
    memset(&recorder, 0, sizeof(recorder));
    struct serial_8250_callbacks callbacks = {record_irq, record_output, record_ready, &recorder};
    serial_8250_init(&uart, &callbacks);
}

static void teardown(void)
{
    serial_8250_destroy(&uart);
}

TestSuite(vmm_serial, .init = setup, .fini = teardown);

Test(vmm_serial, linux_autoconfig_probe)
{
    /* Existence test: IER reads back what was written, four bits of it. */
    serial_8250_write(&uart, UART_IER, 0);
    cr_assert_eq(serial_8250_read(&uart, UART_IER) & 0x0f, 0);
    serial_8250_write(&uart, UART_IER, 0xff);
    cr_assert_eq(serial_8250_read(&uart, UART_IER), 0x0f);
    serial_8250_write(&uart, UART_IER, 0);

    /* Loopback: MCR's RTS and OUT2 come back as CTS and DCD. */
    serial_8250_write(&uart, UART_MCR, UART_MCR_LOOP | 0x0a);
    cr_assert_eq(serial_8250_read(&uart, UART_MSR) & 0xf0, 0x90);
    serial_8250_write(&uart, UART_MCR, 0x0b);
    cr_assert_eq(serial_8250_read(&uart, UART_MSR) & 0xf0, 0xb0, "a terminal is attached");

    /* FIFO: IIR's top bits say 16550A once enabled. */
    serial_8250_write(&uart, UART_FCR, UART_FCR_ENABLE_FIFO);
    cr_assert_eq(serial_8250_read(&uart, UART_IIR) >> 6, 3);
    serial_8250_write(&uart, UART_FCR, 0);
    cr_assert_eq(serial_8250_read(&uart, UART_IIR), UART_IIR_NO_INT);

    /* Scratch register and divisor latch. */
    serial_8250_write(&uart, UART_SCR, 0x5a);
    cr_assert_eq(serial_8250_read(&uart, UART_SCR), 0x5a);
    serial_8250_write(&uart, UART_LCR, UART_LCR_DLAB | 3);
    serial_8250_write(&uart, UART_DLL, 1);
    serial_8250_write(&uart, UART_DLM, 0);
    cr_assert_eq(serial_8250_read(&uart, UART_DLL), 1);
    serial_8250_write(&uart, UART_LCR, 3);
    cr_assert_eq(serial_8250_read(&uart, UART_LCR), 3);
    cr_assert_eq(recorder.output_length, 0, "DLL writes are not output");
}

Test(vmm_serial, loopback_routes_data_back)
{
    serial_8250_write(&uart, UART_MCR, UART_MCR_LOOP);
    serial_8250_write(&uart, UART_TX, 'Q');
    cr_assert_eq(recorder.output_length, 0, "nothing leaves in loopback");
    cr_assert(serial_8250_read(&uart, UART_LSR) & UART_LSR_DR);
    cr_assert_eq(serial_8250_read(&uart, UART_RX), 'Q');
    cr_assert_eq(serial_8250_read(&uart, UART_LSR) & UART_LSR_DR, 0);
    uint8_t byte = 'z';
    cr_assert_eq(serial_8250_receive(&uart, &byte, 1), 0, "the line is disconnected in loopback");
    serial_8250_write(&uart, UART_MCR, 0);
    cr_assert_eq(recorder.receive_ready, 1, "held-back input may flow once loopback ends");
}

Test(vmm_serial, thre_interrupt_as_the_chip_does)
{
    cr_assert_eq(serial_8250_read(&uart, UART_LSR) & (UART_LSR_THRE | UART_LSR_TEMT), UART_LSR_THRE | UART_LSR_TEMT);
    /* Linux's THRE test: enabling THRI raises it, reading IIR clears it, re-enabling raises it again. */
    serial_8250_write(&uart, UART_IER, UART_IER_THRI);
    cr_assert(recorder.level);
    cr_assert_eq(serial_8250_read(&uart, UART_IIR), UART_IIR_THRI);
    cr_assert_not(recorder.level);
    cr_assert_eq(serial_8250_read(&uart, UART_IIR), UART_IIR_NO_INT);
    serial_8250_write(&uart, UART_IER, 0);
    serial_8250_write(&uart, UART_IER, UART_IER_THRI);
    cr_assert_eq(serial_8250_read(&uart, UART_IIR), UART_IIR_THRI);

    /* Each transmitted byte makes a new rising edge: THR is empty again at once. */
    unsigned edges = recorder.rising_edges;
    serial_8250_write(&uart, UART_TX, 'h');
    serial_8250_write(&uart, UART_TX, 'i');
    cr_assert_eq(recorder.rising_edges, edges + 2);
    cr_assert_eq(recorder.output_length, 2);
    cr_assert_eq(memcmp(recorder.output, "hi", 2), 0);
}

Test(vmm_serial, received_data_has_priority_and_clears_by_reading)
{
    serial_8250_write(&uart, UART_IER, UART_IER_RDI | UART_IER_THRI);
    const uint8_t input[] = "ab";
    cr_assert_eq(serial_8250_receive(&uart, input, 2), 2);
    cr_assert(recorder.level);
    cr_assert_eq(serial_8250_read(&uart, UART_IIR), UART_IIR_RDI, "received data before THR empty");
    cr_assert_eq(serial_8250_read(&uart, UART_RX), 'a');
    cr_assert_eq(serial_8250_read(&uart, UART_RX), 'b');
    cr_assert_eq(serial_8250_read(&uart, UART_IIR), UART_IIR_THRI);
    cr_assert_eq(serial_8250_read(&uart, UART_IIR), UART_IIR_NO_INT);
    cr_assert_not(recorder.level);
}

Test(vmm_serial, full_fifo_holds_back_input)
{
    uint8_t input[SERIAL_FIFO_SIZE + 10];
    memset(input, 'x', sizeof(input));
    cr_assert_eq(serial_8250_receive(&uart, input, sizeof(input)), SERIAL_FIFO_SIZE);
    cr_assert_eq(recorder.receive_ready, 0);
    serial_8250_read(&uart, UART_RX);
    cr_assert_eq(recorder.receive_ready, 1, "room again: the console may deliver more");
    serial_8250_write(&uart, UART_FCR, UART_FCR_ENABLE_FIFO | UART_FCR_CLEAR_RCVR);
    cr_assert_eq(serial_8250_read(&uart, UART_LSR) & UART_LSR_DR, 0);
}

Test(vmm_serial, modem_status_interrupt_on_loopback_changes)
{
    serial_8250_write(&uart, UART_IER, UART_IER_MSI);
    serial_8250_read(&uart, UART_MSR); /* clear the deltas */
    serial_8250_write(&uart, UART_MCR, UART_MCR_LOOP | UART_MCR_RTS);
    cr_assert_eq(serial_8250_read(&uart, UART_IIR), UART_IIR_MSI);
    uint8_t msr = serial_8250_read(&uart, UART_MSR);
    cr_assert(msr & UART_MSR_CTS);
    cr_assert_eq(serial_8250_read(&uart, UART_IIR), UART_IIR_NO_INT, "reading MSR clears it");
}
