#include "vmm/serial_8250.h"

#include <string.h>

/* What the modem-control outputs read back as in loopback (8250 datasheet). */
static uint8_t loopback_msr(uint8_t mcr)
{
    uint8_t msr = 0;
    if (mcr & UART_MCR_RTS)
        msr |= UART_MSR_CTS;
    if (mcr & UART_MCR_DTR)
        msr |= UART_MSR_DSR;
    if (mcr & UART_MCR_OUT1)
        msr |= UART_MSR_RI;
    if (mcr & UART_MCR_OUT2)
        msr |= UART_MSR_DCD;
    return msr;
}

/* Outside loopback a terminal is always attached: carrier, data set ready, clear to send. */
#define CONNECTED_MSR (UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS)

static uint8_t pending_interrupt(const struct serial_8250 *uart)
{
    if ((uart->ier & UART_IER_RDI) && uart->fifo_count)
        return UART_IIR_RDI;
    if ((uart->ier & UART_IER_THRI) && uart->thre_pending)
        return UART_IIR_THRI;
    if ((uart->ier & UART_IER_MSI) && (uart->msr & UART_MSR_DELTA_MASK))
        return UART_IIR_MSI;
    return UART_IIR_NO_INT;
}

static void update_irq(struct serial_8250 *uart)
{
    bool level = pending_interrupt(uart) != UART_IIR_NO_INT;
    if (level == uart->irq_level)
        return;
    uart->irq_level = level;
    if (uart->callbacks.set_irq)
        uart->callbacks.set_irq(uart->callbacks.opaque, level);
}

static void set_msr_inputs(struct serial_8250 *uart, uint8_t inputs)
{
    uint8_t old = uart->msr & 0xf0;
    uint8_t changed = (uint8_t)(old ^ inputs);
    uint8_t delta = uart->msr & UART_MSR_DELTA_MASK;
    if (changed & UART_MSR_CTS)
        delta |= UART_MSR_DCTS;
    if (changed & UART_MSR_DSR)
        delta |= 0x02;
    if ((old & UART_MSR_RI) && !(inputs & UART_MSR_RI)) /* trailing edge of ring indicator */
        delta |= 0x04;
    if (changed & UART_MSR_DCD)
        delta |= 0x08;
    uart->msr = (uint8_t)(inputs | delta);
}

void serial_8250_init(struct serial_8250 *uart, const struct serial_8250_callbacks *callbacks)
{
    memset(uart, 0, sizeof(*uart));
    pthread_mutex_init(&uart->lock, NULL);
    if (callbacks)
        uart->callbacks = *callbacks;
    uart->msr = CONNECTED_MSR;
    uart->dll = 0x0c; /* 9600 baud, what a PC BIOS leaves behind */
    uart->mcr = UART_MCR_OUT2;
}

void serial_8250_destroy(struct serial_8250 *uart)
{
    pthread_mutex_destroy(&uart->lock);
}

static bool fifo_push(struct serial_8250 *uart, uint8_t byte)
{
    if (uart->fifo_count == SERIAL_FIFO_SIZE)
        return false;
    uart->fifo[(uart->fifo_head + uart->fifo_count) % SERIAL_FIFO_SIZE] = byte;
    uart->fifo_count++;
    return true;
}

static uint8_t fifo_pop(struct serial_8250 *uart)
{
    if (!uart->fifo_count)
        return 0;
    uint8_t byte = uart->fifo[uart->fifo_head];
    uart->fifo_head = (uart->fifo_head + 1) % SERIAL_FIFO_SIZE;
    uart->fifo_count--;
    return byte;
}

/* Called with the lock held; drops it around nothing: receive_ready must not re-enter. */
static void note_room(struct serial_8250 *uart)
{
    if (uart->receiver_was_full && uart->fifo_count < SERIAL_FIFO_SIZE) {
        uart->receiver_was_full = false;
        if (uart->callbacks.receive_ready)
            uart->callbacks.receive_ready(uart->callbacks.opaque);
    }
}

uint8_t serial_8250_read(struct serial_8250 *uart, unsigned offset)
{
    uint8_t value = 0xff;
    pthread_mutex_lock(&uart->lock);
    bool dlab = uart->lcr & UART_LCR_DLAB;
    switch (offset) {
    case UART_RX:
        if (dlab) {
            value = uart->dll;
        } else {
            value = fifo_pop(uart);
            note_room(uart);
        }
        break;
    case UART_IER:
        value = dlab ? uart->dlm : uart->ier;
        break;
    case UART_IIR:
        value = pending_interrupt(uart);
        /* Reading IIR acknowledges a THR-empty interrupt (and only that one). */
        if (value == UART_IIR_THRI)
            uart->thre_pending = false;
        if (uart->fcr & UART_FCR_ENABLE_FIFO)
            value |= UART_IIR_FIFO_ENABLED;
        break;
    case UART_LCR:
        value = uart->lcr;
        break;
    case UART_MCR:
        value = uart->mcr;
        break;
    case UART_LSR:
        value = UART_LSR_THRE | UART_LSR_TEMT | (uart->fifo_count ? UART_LSR_DR : 0);
        break;
    case UART_MSR:
        value = uart->msr;
        uart->msr &= (uint8_t)~UART_MSR_DELTA_MASK;
        break;
    case UART_SCR:
        value = uart->scr;
        break;
    default:
        break;
    }
    update_irq(uart);
    pthread_mutex_unlock(&uart->lock);
    return value;
}

static void transmit(struct serial_8250 *uart, uint8_t byte)
{
    /* The write empties THR's interrupt; the byte leaves at once, so THR is empty again: a new edge. */
    uart->thre_pending = false;
    update_irq(uart);
    if (uart->mcr & UART_MCR_LOOP)
        fifo_push(uart, byte);
    else if (uart->callbacks.transmit)
        uart->callbacks.transmit(uart->callbacks.opaque, byte);
    uart->thre_pending = true;
}

void serial_8250_write(struct serial_8250 *uart, unsigned offset, uint8_t value)
{
    pthread_mutex_lock(&uart->lock);
    bool dlab = uart->lcr & UART_LCR_DLAB;
    switch (offset) {
    case UART_TX:
        if (dlab)
            uart->dll = value;
        else
            transmit(uart, value);
        break;
    case UART_IER:
        if (dlab) {
            uart->dlm = value;
        } else {
            /* Enabling the THRE interrupt with THR empty raises it at once, as on the chip. */
            if ((value & UART_IER_THRI) && !(uart->ier & UART_IER_THRI))
                uart->thre_pending = true;
            uart->ier = value & 0x0f;
        }
        break;
    case UART_FCR:
        if (value & UART_FCR_CLEAR_RCVR) {
            uart->fifo_count = 0;
            uart->fifo_head = 0;
            note_room(uart);
        }
        uart->fcr = value & UART_FCR_ENABLE_FIFO;
        break;
    case UART_LCR:
        uart->lcr = value;
        break;
    case UART_MCR: {
        uart->mcr = value & 0x1f;
        set_msr_inputs(uart, (uart->mcr & UART_MCR_LOOP) ? loopback_msr(uart->mcr) : CONNECTED_MSR);
        if (!(uart->mcr & UART_MCR_LOOP)) /* input held back during loopback may flow again */
            note_room(uart);
        break;
    }
    case UART_SCR:
        uart->scr = value;
        break;
    default: /* LSR and MSR are read-only */
        break;
    }
    update_irq(uart);
    pthread_mutex_unlock(&uart->lock);
}

size_t serial_8250_receive(struct serial_8250 *uart, const uint8_t *data, size_t length)
{
    size_t accepted = 0;
    pthread_mutex_lock(&uart->lock);
    /* In loopback the line is disconnected from the outside. */
    if (!(uart->mcr & UART_MCR_LOOP))
        while (accepted < length && fifo_push(uart, data[accepted]))
            accepted++;
    if (accepted < length)
        uart->receiver_was_full = true;
    update_irq(uart);
    pthread_mutex_unlock(&uart->lock);
    return accepted;
}
