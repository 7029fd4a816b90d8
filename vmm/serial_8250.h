/*
 * serial_8250: a 16550A UART (the PC's COM1 at 0x3f8, IRQ 4) as Linux's
 * 8250 driver probes and drives it.
 *
 * Transmission is instantaneous (THR is always empty again, so THRE and
 * TEMT stay set); received bytes wait in a 64-byte FIFO.  The interrupt
 * output follows the 8250's priorities (line status, received data, THR
 * empty, modem status), is reported through set_irq whenever it changes
 * level, and the THRE interrupt is cleared by reading IIR or writing THR
 * and re-armed by enabling it, as the real chip does (Linux's THRE test at
 * start-up depends on it).  Loopback (MCR bit 4) routes THR to the FIFO and
 * MCR's outputs to MSR's inputs, which is how Linux decides a UART exists.
 *
 * Thread-safe: vCPU threads access registers, the I/O thread delivers
 * input; callbacks run with the UART's lock held and must not call back in.
 */
#ifndef LUNA_VMM_SERIAL_8250_H
#define LUNA_VMM_SERIAL_8250_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SERIAL_COM1_PORT 0x3f8u
#define SERIAL_COM1_IRQ 4u
#define SERIAL_PORT_COUNT 8u
#define SERIAL_FIFO_SIZE 64u

/* Register offsets. */
#define UART_RX 0   /* read, DLAB = 0 */
#define UART_TX 0   /* write, DLAB = 0 */
#define UART_DLL 0  /* DLAB = 1 */
#define UART_IER 1
#define UART_DLM 1  /* DLAB = 1 */
#define UART_IIR 2  /* read */
#define UART_FCR 2  /* write */
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_MSR 6
#define UART_SCR 7

#define UART_IER_RDI 0x01
#define UART_IER_THRI 0x02
#define UART_IER_RLSI 0x04
#define UART_IER_MSI 0x08
#define UART_IIR_NO_INT 0x01
#define UART_IIR_MSI 0x00
#define UART_IIR_THRI 0x02
#define UART_IIR_RDI 0x04
#define UART_IIR_FIFO_ENABLED 0xc0
#define UART_FCR_ENABLE_FIFO 0x01
#define UART_FCR_CLEAR_RCVR 0x02
#define UART_LCR_DLAB 0x80
#define UART_MCR_DTR 0x01
#define UART_MCR_RTS 0x02
#define UART_MCR_OUT1 0x04
#define UART_MCR_OUT2 0x08
#define UART_MCR_LOOP 0x10
#define UART_LSR_DR 0x01
#define UART_LSR_THRE 0x20
#define UART_LSR_TEMT 0x40
#define UART_MSR_DCTS 0x01
#define UART_MSR_DELTA_MASK 0x0f
#define UART_MSR_CTS 0x10
#define UART_MSR_DSR 0x20
#define UART_MSR_RI 0x40
#define UART_MSR_DCD 0x80

struct serial_8250_callbacks {
    void (*set_irq)(void *opaque, bool level);
    void (*transmit)(void *opaque, uint8_t byte);
    /* The guest made room in a full receive FIFO: more input may be delivered. */
    void (*receive_ready)(void *opaque);
    void *opaque;
};

struct serial_8250 {
    pthread_mutex_t lock;
    struct serial_8250_callbacks callbacks;
    uint8_t ier, lcr, mcr, msr, scr, fcr, dll, dlm;
    bool thre_pending; /* the THR-empty interrupt is armed */
    bool irq_level;
    bool receiver_was_full;
    uint8_t fifo[SERIAL_FIFO_SIZE];
    unsigned fifo_head, fifo_count;
};

void serial_8250_init(struct serial_8250 *uart, const struct serial_8250_callbacks *callbacks);
void serial_8250_destroy(struct serial_8250 *uart);

uint8_t serial_8250_read(struct serial_8250 *uart, unsigned offset);
void serial_8250_write(struct serial_8250 *uart, unsigned offset, uint8_t value);

/* Deliver input; returns how many bytes fit in the FIFO (the rest wait for receive_ready). */
size_t serial_8250_receive(struct serial_8250 *uart, const uint8_t *data, size_t length);

#endif
