/*
 * cmos_rtc: the MC146818 real-time clock at ports 0x70/0x71, read-only.
 *
 * Linux reads the wall-clock time from it at boot and polls the
 * update-in-progress bit before each read; an absent RTC (all-ones) keeps
 * that bit set and costs a loop of exits, so the registers answer with the
 * host's UTC time in BCD, update never in progress, the battery good.
 * Writes (index selection aside) are ignored: the guest cannot set the
 * host's clock, and no alarm or periodic interrupt is generated.
 */
#ifndef LUNA_VMM_CMOS_RTC_H
#define LUNA_VMM_CMOS_RTC_H

#include <stdatomic.h>
#include <stdint.h>

#define CMOS_INDEX_PORT 0x70u
#define CMOS_DATA_PORT 0x71u

struct io_bus;

struct cmos_rtc {
    atomic_uint index; /* selected register; bit 7 is the NMI mask, not part of it */
};

int cmos_rtc_register(struct cmos_rtc *rtc, struct io_bus *ports);

/* The value of register index at the given time (seconds since the epoch), for tests. */
uint8_t cmos_rtc_register_value(unsigned index, int64_t now);

#endif
