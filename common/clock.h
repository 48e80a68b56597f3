/* Time sources: wall clock for records, monotonic clock for timeouts. */
#ifndef COALITION_CLOCK_H
#define COALITION_CLOCK_H

#include <stdint.h>

int64_t clock_wall_ms(void);
int64_t clock_mono_ms(void);
int64_t clock_mono_us(void);

#endif
