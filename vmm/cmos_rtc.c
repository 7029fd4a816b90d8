#include "vmm/cmos_rtc.h"

#include <time.h>

#include "vmm/io_bus.h"

enum {
    RTC_SECONDS = 0x00,
    RTC_MINUTES = 0x02,
    RTC_HOURS = 0x04,
    RTC_DAY_OF_WEEK = 0x06,
    RTC_DAY_OF_MONTH = 0x07,
    RTC_MONTH = 0x08,
    RTC_YEAR = 0x09,
    RTC_REGISTER_A = 0x0a,
    RTC_REGISTER_B = 0x0b,
    RTC_REGISTER_C = 0x0c,
    RTC_REGISTER_D = 0x0d,
    RTC_CENTURY = 0x32,
};

#define RTC_A_DIVIDER_32KHZ 0x26  /* 32.768 kHz time base, 1024 Hz rate, UIP clear */
#define RTC_B_24_HOUR 0x02        /* 24-hour clock, BCD */
#define RTC_D_VALID_RAM_TIME 0x80

static uint8_t to_bcd(int value)
{
    return (uint8_t)(((value / 10) % 10) << 4 | (value % 10));
}

uint8_t cmos_rtc_register_value(unsigned index, int64_t now)
{
    time_t seconds = (time_t)now;
    struct tm tm;
    if (!gmtime_r(&seconds, &tm))
        return 0;
    switch (index) {
    case RTC_SECONDS: return to_bcd(tm.tm_sec);
    case RTC_MINUTES: return to_bcd(tm.tm_min);
    case RTC_HOURS: return to_bcd(tm.tm_hour);
    case RTC_DAY_OF_WEEK: return to_bcd(tm.tm_wday + 1);
    case RTC_DAY_OF_MONTH: return to_bcd(tm.tm_mday);
    case RTC_MONTH: return to_bcd(tm.tm_mon + 1);
    case RTC_YEAR: return to_bcd(tm.tm_year % 100);
    case RTC_CENTURY: return to_bcd((tm.tm_year + 1900) / 100);
    case RTC_REGISTER_A: return RTC_A_DIVIDER_32KHZ;
    case RTC_REGISTER_B: return RTC_B_24_HOUR;
    case RTC_REGISTER_C: return 0;
    case RTC_REGISTER_D: return RTC_D_VALID_RAM_TIME;
    default: return 0; /* CMOS RAM: nothing configured */
    }
}

static void rtc_read(void *opaque, uint64_t offset, uint8_t *data, unsigned length)
{
    struct cmos_rtc *rtc = opaque;
    (void)length;
    if (offset == 0) {
        data[0] = 0xff; /* the index port is write-only on the PC */
        return;
    }
    data[0] = cmos_rtc_register_value(atomic_load(&rtc->index), (int64_t)time(NULL));
}

static void rtc_write(void *opaque, uint64_t offset, const uint8_t *data, unsigned length)
{
    struct cmos_rtc *rtc = opaque;
    (void)length;
    if (offset == 0)
        atomic_store(&rtc->index, data[0] & 0x7fu);
}

int cmos_rtc_register(struct cmos_rtc *rtc, struct io_bus *ports)
{
    atomic_init(&rtc->index, 0);
    return io_bus_register(ports, CMOS_INDEX_PORT, 2, rtc_read, rtc_write, rtc);
}
