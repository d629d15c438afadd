/* A C consumer of a lane that Python created, using only include/byteor_v1.h.
 *
 *   reader geometry CAPACITY SLOT_BYTES MAX_CONSUMERS
 *       print every byteor_geometry field as name=value (compared with layout.Geometry)
 *   reader check PATH
 *       validate the segment's header; print "ok" or the problem, exit 0 or 2
 *   reader read PATH COUNT [CONSUMER_LINE]
 *       attach as the (already registered, gating) consumer on CONSUMER_LINE (default 0),
 *       read COUNT messages, print "SEQ LENGTH HEX" for each, release each slot, and end
 *       with "count=N". Exit 3 if nothing arrives for 10 s, 4 if the lane closed early,
 *       5 on a corrupt slot, 2 on a bad header.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "byteor_v1.h"

static int usage(void) {
    fprintf(stderr, "usage: reader geometry CAP SLOT MC | check PATH | read PATH N [LINE]\n");
    return 64;
}

static uint64_t arg_u64(const char *s) {
    return strtoull(s, NULL, 10);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmd_geometry(uint64_t capacity, uint64_t slot_bytes, uint64_t max_consumers) {
    byteor_geometry g = byteor_geometry_of(capacity, slot_bytes, max_consumers);
    printf("capacity=%llu\n", (unsigned long long)g.capacity);
    printf("slot_bytes=%llu\n", (unsigned long long)g.slot_bytes);
    printf("max_consumers=%llu\n", (unsigned long long)g.max_consumers);
    printf("producer_offset=%llu\n", (unsigned long long)g.producer_offset);
    printf("consumers_offset=%llu\n", (unsigned long long)g.consumers_offset);
    printf("descriptors_offset=%llu\n", (unsigned long long)g.descriptors_offset);
    printf("payloads_offset=%llu\n", (unsigned long long)g.payloads_offset);
    printf("total_bytes=%llu\n", (unsigned long long)g.total_bytes);
    for (uint64_t i = 0; i < max_consumers; i++) {
        printf("consumer_offset[%llu]=%llu\n", (unsigned long long)i,
               (unsigned long long)byteor_consumer_offset(&g, i));
    }
    return 0;
}

/* Map PATH whole and validate it. Returns the mapping or NULL (after printing why). */
static void *attach(const char *path, byteor_geometry *g, int *code) {
    int fd = open(path, O_RDWR);
    if (fd < 0) {
        perror(path);
        *code = 2;
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size <= 0) {
        printf("truncated\n");
        close(fd);
        *code = 2;
        return NULL;
    }
    void *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (base == MAP_FAILED) {
        perror("mmap");
        *code = 2;
        return NULL;
    }
    *code = byteor_check_header(base, (uint64_t)st.st_size, g);
    if (*code != BYTEOR_OK) {
        printf("%s\n", byteor_check_name(*code));
        munmap(base, (size_t)st.st_size);
        *code = 2;
        return NULL;
    }
    return base;
}

static int cmd_check(const char *path) {
    byteor_geometry g;
    int code;
    void *base = attach(path, &g, &code);
    if (base == NULL) return code;
    printf("ok\n");
    munmap(base, g.total_bytes);
    return 0;
}

static int cmd_read(const char *path, uint64_t count, uint64_t line) {
    byteor_geometry g;
    int code;
    void *base = attach(path, &g, &code);
    if (base == NULL) return code;
    if (line >= g.max_consumers
        || __atomic_load_n(&byteor_consumer(base, &g, line)->state, __ATOMIC_ACQUIRE)
               != BYTEOR_STATE_GATING) {
        fprintf(stderr, "consumer line %llu is not a registered gating consumer\n",
                (unsigned long long)line);
        return 2;
    }
    byteor_reader r;
    byteor_reader_init(&r, base, &g, line);
    uint64_t got = 0;
    double deadline = now_s() + 10.0;
    while (got < count) {
        const uint8_t *payload;
        uint32_t length;
        int rc = byteor_reader_poll(&r, &payload, &length);
        if (rc == BYTEOR_POLL_EMPTY) {
            if (now_s() > deadline) {
                fprintf(stderr, "timed out after %llu messages\n", (unsigned long long)got);
                return 3;
            }
            sched_yield();
            continue;
        }
        if (rc == BYTEOR_POLL_CLOSED) {
            fprintf(stderr, "lane closed after %llu messages\n", (unsigned long long)got);
            return 4;
        }
        if (rc == BYTEOR_POLL_CORRUPT) {
            fprintf(stderr, "corrupt slot at sequence %llu\n", (unsigned long long)r.next);
            return 5;
        }
        printf("%llu %u ", (unsigned long long)r.next, length);
        for (uint32_t i = 0; i < length; i++) printf("%02x", payload[i]);
        printf("\n");
        if (byteor_reader_release(&r)) {
            syscall(SYS_futex, (uint32_t *)&r.consumer->cursor, FUTEX_WAKE, INT_MAX, NULL, NULL,
                    0);
        }
        got++;
        deadline = now_s() + 10.0;
    }
    printf("count=%llu\n", (unsigned long long)got);
    munmap(base, g.total_bytes);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "geometry") == 0) {
        return cmd_geometry(arg_u64(argv[2]), arg_u64(argv[3]), arg_u64(argv[4]));
    }
    if (argc == 3 && strcmp(argv[1], "check") == 0) return cmd_check(argv[2]);
    if ((argc == 4 || argc == 5) && strcmp(argv[1], "read") == 0) {
        return cmd_read(argv[2], arg_u64(argv[3]), argc == 5 ? arg_u64(argv[4]) : 0);
    }
    return usage();
}
