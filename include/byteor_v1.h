/* byteor_v1.h: the IndexBus lane segment layout, C11 view (GCC or Clang).
 *
 * generated, do not edit: python -m byteor.lanes.cheader
 * source: byteor/lanes/layout.py; `python -m byteor.lanes.cheader --check` tells
 * whether this file is current.
 *
 * Every shared-memory layout of IndexBus, defined once.
 *
 * This module is the single source of truth for the bytes of a lane segment. The ctypes
 * structures below are what Python reads and writes, and byteor.lanes.cheader generates
 * include/byteor_v1.h from the very same definitions, so a C program attaches to a lane
 * that Python created without a second description drifting away from this one.
 *
 * All integers are little-endian (the only byte order we run on, see _platform).
 *
 * A segment, from offset 0::
 *
 *     0        64       128      192      256               384
 *     +--------+--------+--------+--------+-----------------+--------------------------+
 *     | ident  | owner  |  (reserved)     | producer block  | consumer blocks          |
 *     | geom.  | + name |                 | 2 lines         | max_consumers x 2 lines  |
 *     +--------+--------+--------+--------+-----------------+--------------------------+
 *     |<------- SegmentHeader (256) ----->|<- ProducerBlock->|<- ConsumerBlock x N ----->|
 *
 *     then, each region aligned to 64 bytes:
 *     +----------------------------------------+----------------------------------------+
 *     | descriptors: capacity x SlotDescriptor | payloads: capacity x slot_bytes        |
 *     | (16 bytes each)                        | (slot i's payload at i * slot_bytes)   |
 *     +----------------------------------------+----------------------------------------+
 *
 * SegmentHeader, line 0 (immutable after creation, covered by header_crc)::
 *
 *     0       8       12      16      20      24              32      36      40              48
 *     +-------+-------+-------+-------+-------+---------------+-------+-------+---------------+
 *     | magic | abi   | kind  | layout| flags | capacity      | slot_ | max_  | total_bytes   |
 *     | (8)   | ver(4)| (4)   | id(4) | (4)   | (8)           | bytes | cons. | (8)           |
 *     +-------+-------+-------+-------+-------+---------------+-------+-------+---------------+
 *     48              56      60      64
 *     +---------------+-------+-------+
 *     | created_ns(8) |creator|creator|
 *     |               | uid   | pid   |
 *     +---------------+-------+-------+
 *
 * SegmentHeader, line 1 (64..127)::
 *
 *     64       68       72               80                                           128
 *     +--------+--------+----------------+--------------------------------------------+
 *     | header | reg.   | creator_start  | name (48 bytes, UTF-8, NUL padded)         |
 *     | crc32  | epoch  | (8)            |                                            |
 *     +--------+--------+----------------+--------------------------------------------+
 *
 * The producer block (two cache lines). Line 0 is written only by the producer: readers poll
 * cursor and nothing else they write shares its line. Line 1 holds one "I am asleep" byte
 * per consumer: a consumer writes only its own byte (a plain one-byte store, no read-modify-write),
 * and the producer reads eight of them with one 8-byte load after each publish::
 *
 *     0        8        16       24       32       40       48   52   56       64
 *     +--------+--------+--------+--------+--------+--------+----+----+--------+
 *     | cursor | claimed| full_  | drops  | epoch_ | sleep- |clsd|pid | start_ |   line 0
 *     |        |        | waits  |        | seen   | ing    |    |    | time   |
 *     +--------+--------+--------+--------+--------+--------+----+----+--------+
 *     | consumer_sleeping[64]: one byte per consumer line                      |   line 1
 *     +------------------------------------------------------------------------+
 *
 * A consumer block (two cache lines, one per consumer, max_consumers of them). Line 0 is
 * written by its consumer (cursor, counters), line 1 once at registration::
 *
 *     0        8     12    16       24       32       40       48       56       64
 *     +--------+-----+-----+--------+--------+--------+--------+--------+--------+
 *     | cursor |state|pid  | lost   | waits  | after  | start_ | joined | (res.) |
 *     |        |     |     |        |        | mask   | time   | at     |        |
 *     +--------+-----+-----+--------+--------+--------+--------+--------+--------+
 *     | name (48 bytes, UTF-8, NUL padded)             | epoch  | (reserved)      |
 *     +------------------------------------------------+--------+-----------------+
 *
 * sleeping is non-zero while the producer sleeps waiting for room; every consumer reads it
 * after releasing a slot. claimed is the producer's announcement: it writes no sequence at
 * or beyond it without first storing a larger value here, so slot s is intact while
 * claimed <= s + capacity.
 *
 * cursor is a count: the producer's cursor is the number of messages published (the next
 * sequence to publish), a consumer's is the number it has released (the next one it reads).
 * A slot descriptor says what the slot holds::
 *
 *     0        4        8                16
 *     +--------+--------+----------------+
 *     | length | flags  | seq            |
 *     +--------+--------+----------------+
 *
 * The writer stores seq after the payload and length, so a reader that finds
 * seq == s in slot s & (capacity - 1) may read message s without looking at the
 * producer cursor. Slots never written hold SEQ_NEVER_WRITTEN.
 *
 * Counters segments
 * -----------------
 * A pipeline run keeps one more segment next to its lanes: a table of per-node counters
 * (records in and out, errors, time busy), one row per source, stage or sink, so that
 * byteor snapshot reads them from outside. Each row has exactly one writer at a time, the
 * process that runs the node; nobody takes a lock. Rows carry their node's name and process
 * group as plain strings: the segment knows nothing of specs. From offset 0::
 *
 *     0                 128                     128 + 256     128 + rows x 256
 *     +-----------------+-----------------------+--------------+
 *     | CountersHeader  | NodeRow 0             | NodeRow 1 .. |
 *     | (2 lines)       | (4 lines)             |              |
 *     +-----------------+-----------------------+--------------+
 *
 * CountersHeader, line 0 (immutable after creation, covered by header_crc)::
 *
 *     0       8       12      16      20      24              32              40      44
 *     +-------+-------+-------+-------+-------+---------------+---------------+-------+-------+
 *     | magic | abi   | layout| rows  | row_  | total_bytes   | created_ns    |creator|creator|
 *     | (8)   | ver(4)| id(4) | (4)   | bytes | (8)           | (8)           | uid   | pid   |
 *     +-------+-------+-------+-------+-------+---------------+---------------+-------+-------+
 *     48              56              64
 *     +---------------+---------------+
 *     | creator_start | (reserved)    |
 *     +---------------+---------------+
 *
 * CountersHeader, line 1 (64..127)::
 *
 *     64       68       72                                           120      128
 *     +--------+--------+--------------------------------------------+--------+
 *     | header | finish-| name (48 bytes, UTF-8, NUL padded)         | (res.) |
 *     | crc32  | ed     |                                            |        |
 *     +--------+--------+--------------------------------------------+--------+
 *
 * A NodeRow. Line 0 holds the *committed* counters, written under a sequence lock: the owner
 * makes seq odd, writes the seven words, makes it even again; a reader that sees the same
 * even seq before and after reading the words has a consistent row (x86-64 keeps stores in
 * order, see _platform). The owner commits when everything it took from its inputs has been
 * published, so a committed row always adds up (in = out + dropped for a filter). Line 1 is
 * live (what the owner is doing now, and the restart accounting); lines 2-3 are written once::
 *
 *     0      8         16        24      32       40      48        56         64
 *     +------+---------+---------+-------+--------+-------+---------+----------+
 *     | seq  | records | records | errors| skipped| routed| busy_ns | updated_ |   line 0
 *     |      | _in     | _out    |       |        |       |         | ns       |
 *     +------+---------+---------+-------+--------+-------+---------+----------+
 *     64        72    76    80        88       96       104        112       120        128
 *     +---------+-----+-----+---------+--------+--------+----------+---------+----------+
 *     | inflight|phase| pid | started_| owner_ |restarts| redeliv- | dupli-  | pending_ |   line 1
 *     |         |     |     | ns      | start  |        | ered     | cates   | skipped  |
 *     +---------+-----+-----+---------+--------+--------+----------+---------+----------+
 *     | name (48 bytes, UTF-8, NUL padded)                | role   | (reserved)       |   line 2
 *     +---------------------------------------------------+--------+------------------+
 *     | group (48 bytes: the process the node runs in)    | (reserved)                |   line 3
 *     +---------------------------------------------------+---------------------------+
 *
 * busy_ns is time spent in the node's work (a stage's op) and started_ns /
 * updated_ns are CLOCK_MONOTONIC readings (one clock for every process of a machine):
 * busy share = busy_ns / (now - started_ns). inflight counts records taken since the
 * last commit (0 when idle); phase says whether the owner is waiting for input, inside the
 * op, or waiting for room in an output.
 */
#ifndef BYTEOR_V1_H
#define BYTEOR_V1_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "byteor lane segments are little-endian and need GCC/Clang __atomic builtins"
#endif

/* ---- constants ------------------------------------------------------------------- */
#define BYTEOR_MAGIC                    "BYTEORLN"
#define BYTEOR_MAGIC_LEN                8u
#define BYTEOR_ABI_VERSION              1u
#define BYTEOR_CACHE_LINE               64u

/* lane kinds (byteor_segment_header.kind) */
#define BYTEOR_KIND_EVENTS              1u  /* "events" */
#define BYTEOR_KIND_JOURNAL             2u  /* "journal" */
#define BYTEOR_KIND_SLOTS               3u  /* "slots" */
#define BYTEOR_KIND_FANOUT              4u  /* "fanout" */

/* byteor_segment_header.flags bits */
#define BYTEOR_FLAG_FILE_BACKED         1u

/* consumer line states (byteor_consumer_block.state) */
#define BYTEOR_STATE_FREE               0u  /* "free" */
#define BYTEOR_STATE_GATING             1u  /* "gating" */
#define BYTEOR_STATE_OVERRUN            2u  /* "overrun" */

/* limits (capacity: a power of two; slot_bytes: a multiple of 8) */
#define BYTEOR_MIN_CAPACITY             2u
#define BYTEOR_MAX_CAPACITY             16777216u
#define BYTEOR_MIN_SLOT_BYTES           8u
#define BYTEOR_MAX_SLOT_BYTES           1048576u
#define BYTEOR_MAX_CONSUMERS            64u
#define BYTEOR_MAX_NAME_BYTES           48u
#define BYTEOR_SEQ_NEVER_WRITTEN        18446744073709551615ull

/* CRC of every field name, offset and size below */
#define BYTEOR_LAYOUT_ID                0x68e7f33du

/* header_crc covers segment bytes [0, BYTEOR_HEADER_CRC_SPAN) */
#define BYTEOR_HEADER_CRC_SPAN          64u

/* counters segments (byteor_counters_header, then rows x byteor_node_row) */
#define BYTEOR_COUNTERS_MAGIC           "BYTEORCT"
#define BYTEOR_COUNTERS_MAGIC_LEN       8u
#define BYTEOR_COUNTERS_ABI_VERSION     1u
#define BYTEOR_COUNTERS_MAX_ROWS        4096u
#define BYTEOR_COUNTERS_LAYOUT_ID       0x2dbddea1u
#define BYTEOR_COUNTERS_CRC_SPAN        64u

/* what a row counts (byteor_node_row.role) */
#define BYTEOR_ROLE_SOURCE              1u  /* "source" */
#define BYTEOR_ROLE_STAGE               2u  /* "stage" */
#define BYTEOR_ROLE_SINK                3u  /* "sink" */

/* what a row's owner does now (byteor_node_row.phase) */
#define BYTEOR_PHASE_IDLE               0u  /* "idle" */
#define BYTEOR_PHASE_STEP               1u  /* "step" */
#define BYTEOR_PHASE_BLOCKED            2u  /* "blocked" */
#define BYTEOR_PHASE_DONE               3u  /* "done" */

/* ---- structures (no packing: every field is naturally aligned) -------------------- */

/* SegmentHeader: The first 256 bytes of every segment. */
typedef struct byteor_segment_header {
    char magic[8];                          /*    0 ..    8 */
    uint32_t abi_version;                   /*    8 ..   12 */
    uint32_t kind;                          /*   12 ..   16 */
    uint32_t layout_id;                     /*   16 ..   20 */
    uint32_t flags;                         /*   20 ..   24 */
    uint64_t capacity;                      /*   24 ..   32 */
    uint32_t slot_bytes;                    /*   32 ..   36 */
    uint32_t max_consumers;                 /*   36 ..   40 */
    uint64_t total_bytes;                   /*   40 ..   48 */
    uint64_t created_ns;                    /*   48 ..   56 */
    uint32_t creator_uid;                   /*   56 ..   60 */
    uint32_t creator_pid;                   /*   60 ..   64 */
    uint32_t header_crc;                    /*   64 ..   68 */
    uint32_t registration_epoch;            /*   68 ..   72 */
    uint64_t creator_start;                 /*   72 ..   80 */
    char name[48];                          /*   80 ..  128 */
    uint8_t _reserved[128];                 /*  128 ..  256 */
} byteor_segment_header;
_Static_assert(offsetof(byteor_segment_header, magic) == 0, "SegmentHeader.magic offset");
_Static_assert(offsetof(byteor_segment_header, abi_version) == 8, "SegmentHeader.abi_version offset");
_Static_assert(offsetof(byteor_segment_header, kind) == 12, "SegmentHeader.kind offset");
_Static_assert(offsetof(byteor_segment_header, layout_id) == 16, "SegmentHeader.layout_id offset");
_Static_assert(offsetof(byteor_segment_header, flags) == 20, "SegmentHeader.flags offset");
_Static_assert(offsetof(byteor_segment_header, capacity) == 24, "SegmentHeader.capacity offset");
_Static_assert(offsetof(byteor_segment_header, slot_bytes) == 32, "SegmentHeader.slot_bytes offset");
_Static_assert(offsetof(byteor_segment_header, max_consumers) == 36, "SegmentHeader.max_consumers offset");
_Static_assert(offsetof(byteor_segment_header, total_bytes) == 40, "SegmentHeader.total_bytes offset");
_Static_assert(offsetof(byteor_segment_header, created_ns) == 48, "SegmentHeader.created_ns offset");
_Static_assert(offsetof(byteor_segment_header, creator_uid) == 56, "SegmentHeader.creator_uid offset");
_Static_assert(offsetof(byteor_segment_header, creator_pid) == 60, "SegmentHeader.creator_pid offset");
_Static_assert(offsetof(byteor_segment_header, header_crc) == 64, "SegmentHeader.header_crc offset");
_Static_assert(offsetof(byteor_segment_header, registration_epoch) == 68, "SegmentHeader.registration_epoch offset");
_Static_assert(offsetof(byteor_segment_header, creator_start) == 72, "SegmentHeader.creator_start offset");
_Static_assert(offsetof(byteor_segment_header, name) == 80, "SegmentHeader.name offset");
_Static_assert(offsetof(byteor_segment_header, _reserved) == 128, "SegmentHeader._reserved offset");
_Static_assert(sizeof(byteor_segment_header) == 256, "sizeof SegmentHeader");

/* ProducerBlock: The producer's cursor line and the consumers' sleep bytes. */
typedef struct byteor_producer_block {
    uint64_t cursor;                        /*    0 ..    8 */
    uint64_t claimed;                       /*    8 ..   16 */
    uint64_t full_waits;                    /*   16 ..   24 */
    uint64_t drops;                         /*   24 ..   32 */
    uint64_t epoch_seen;                    /*   32 ..   40 */
    uint64_t sleeping;                      /*   40 ..   48 */
    uint32_t closed;                        /*   48 ..   52 */
    uint32_t pid;                           /*   52 ..   56 */
    uint64_t start_time;                    /*   56 ..   64 */
    uint8_t consumer_sleeping[64];          /*   64 ..  128 */
} byteor_producer_block;
_Static_assert(offsetof(byteor_producer_block, cursor) == 0, "ProducerBlock.cursor offset");
_Static_assert(offsetof(byteor_producer_block, claimed) == 8, "ProducerBlock.claimed offset");
_Static_assert(offsetof(byteor_producer_block, full_waits) == 16, "ProducerBlock.full_waits offset");
_Static_assert(offsetof(byteor_producer_block, drops) == 24, "ProducerBlock.drops offset");
_Static_assert(offsetof(byteor_producer_block, epoch_seen) == 32, "ProducerBlock.epoch_seen offset");
_Static_assert(offsetof(byteor_producer_block, sleeping) == 40, "ProducerBlock.sleeping offset");
_Static_assert(offsetof(byteor_producer_block, closed) == 48, "ProducerBlock.closed offset");
_Static_assert(offsetof(byteor_producer_block, pid) == 52, "ProducerBlock.pid offset");
_Static_assert(offsetof(byteor_producer_block, start_time) == 56, "ProducerBlock.start_time offset");
_Static_assert(offsetof(byteor_producer_block, consumer_sleeping) == 64, "ProducerBlock.consumer_sleeping offset");
_Static_assert(sizeof(byteor_producer_block) == 128, "sizeof ProducerBlock");

/* ConsumerBlock: One consumer's cursor line and its registration line. */
typedef struct byteor_consumer_block {
    uint64_t cursor;                        /*    0 ..    8 */
    uint32_t state;                         /*    8 ..   12 */
    uint32_t pid;                           /*   12 ..   16 */
    uint64_t lost;                          /*   16 ..   24 */
    uint64_t waits;                         /*   24 ..   32 */
    uint64_t after_mask;                    /*   32 ..   40 */
    uint64_t start_time;                    /*   40 ..   48 */
    uint64_t joined_at;                     /*   48 ..   56 */
    uint64_t _reserved0;                    /*   56 ..   64 */
    char name[48];                          /*   64 ..  112 */
    uint64_t epoch;                         /*  112 ..  120 */
    uint64_t _reserved1;                    /*  120 ..  128 */
} byteor_consumer_block;
_Static_assert(offsetof(byteor_consumer_block, cursor) == 0, "ConsumerBlock.cursor offset");
_Static_assert(offsetof(byteor_consumer_block, state) == 8, "ConsumerBlock.state offset");
_Static_assert(offsetof(byteor_consumer_block, pid) == 12, "ConsumerBlock.pid offset");
_Static_assert(offsetof(byteor_consumer_block, lost) == 16, "ConsumerBlock.lost offset");
_Static_assert(offsetof(byteor_consumer_block, waits) == 24, "ConsumerBlock.waits offset");
_Static_assert(offsetof(byteor_consumer_block, after_mask) == 32, "ConsumerBlock.after_mask offset");
_Static_assert(offsetof(byteor_consumer_block, start_time) == 40, "ConsumerBlock.start_time offset");
_Static_assert(offsetof(byteor_consumer_block, joined_at) == 48, "ConsumerBlock.joined_at offset");
_Static_assert(offsetof(byteor_consumer_block, _reserved0) == 56, "ConsumerBlock._reserved0 offset");
_Static_assert(offsetof(byteor_consumer_block, name) == 64, "ConsumerBlock.name offset");
_Static_assert(offsetof(byteor_consumer_block, epoch) == 112, "ConsumerBlock.epoch offset");
_Static_assert(offsetof(byteor_consumer_block, _reserved1) == 120, "ConsumerBlock._reserved1 offset");
_Static_assert(sizeof(byteor_consumer_block) == 128, "sizeof ConsumerBlock");

/* SlotDescriptor: What slot ``i`` holds: payload length, flags and the sequence written into it. */
typedef struct byteor_slot_descriptor {
    uint32_t length;                        /*    0 ..    4 */
    uint32_t flags;                         /*    4 ..    8 */
    uint64_t seq;                           /*    8 ..   16 */
} byteor_slot_descriptor;
_Static_assert(offsetof(byteor_slot_descriptor, length) == 0, "SlotDescriptor.length offset");
_Static_assert(offsetof(byteor_slot_descriptor, flags) == 4, "SlotDescriptor.flags offset");
_Static_assert(offsetof(byteor_slot_descriptor, seq) == 8, "SlotDescriptor.seq offset");
_Static_assert(sizeof(byteor_slot_descriptor) == 16, "sizeof SlotDescriptor");

/* CountersHeader: The first 128 bytes of a counters segment. */
typedef struct byteor_counters_header {
    char magic[8];                          /*    0 ..    8 */
    uint32_t abi_version;                   /*    8 ..   12 */
    uint32_t layout_id;                     /*   12 ..   16 */
    uint32_t rows;                          /*   16 ..   20 */
    uint32_t row_bytes;                     /*   20 ..   24 */
    uint64_t total_bytes;                   /*   24 ..   32 */
    uint64_t created_ns;                    /*   32 ..   40 */
    uint32_t creator_uid;                   /*   40 ..   44 */
    uint32_t creator_pid;                   /*   44 ..   48 */
    uint64_t creator_start;                 /*   48 ..   56 */
    uint64_t _reserved0;                    /*   56 ..   64 */
    uint32_t header_crc;                    /*   64 ..   68 */
    uint32_t finished;                      /*   68 ..   72 */
    char name[48];                          /*   72 ..  120 */
    uint64_t _reserved1;                    /*  120 ..  128 */
} byteor_counters_header;
_Static_assert(offsetof(byteor_counters_header, magic) == 0, "CountersHeader.magic offset");
_Static_assert(offsetof(byteor_counters_header, abi_version) == 8, "CountersHeader.abi_version offset");
_Static_assert(offsetof(byteor_counters_header, layout_id) == 12, "CountersHeader.layout_id offset");
_Static_assert(offsetof(byteor_counters_header, rows) == 16, "CountersHeader.rows offset");
_Static_assert(offsetof(byteor_counters_header, row_bytes) == 20, "CountersHeader.row_bytes offset");
_Static_assert(offsetof(byteor_counters_header, total_bytes) == 24, "CountersHeader.total_bytes offset");
_Static_assert(offsetof(byteor_counters_header, created_ns) == 32, "CountersHeader.created_ns offset");
_Static_assert(offsetof(byteor_counters_header, creator_uid) == 40, "CountersHeader.creator_uid offset");
_Static_assert(offsetof(byteor_counters_header, creator_pid) == 44, "CountersHeader.creator_pid offset");
_Static_assert(offsetof(byteor_counters_header, creator_start) == 48, "CountersHeader.creator_start offset");
_Static_assert(offsetof(byteor_counters_header, _reserved0) == 56, "CountersHeader._reserved0 offset");
_Static_assert(offsetof(byteor_counters_header, header_crc) == 64, "CountersHeader.header_crc offset");
_Static_assert(offsetof(byteor_counters_header, finished) == 68, "CountersHeader.finished offset");
_Static_assert(offsetof(byteor_counters_header, name) == 72, "CountersHeader.name offset");
_Static_assert(offsetof(byteor_counters_header, _reserved1) == 120, "CountersHeader._reserved1 offset");
_Static_assert(sizeof(byteor_counters_header) == 128, "sizeof CountersHeader");

/* NodeRow: One node's counters: committed (sequence-locked), live, and its identity. */
typedef struct byteor_node_row {
    uint64_t seq;                           /*    0 ..    8 */
    uint64_t records_in;                    /*    8 ..   16 */
    uint64_t records_out;                   /*   16 ..   24 */
    uint64_t errors;                        /*   24 ..   32 */
    uint64_t skipped;                       /*   32 ..   40 */
    uint64_t routed;                        /*   40 ..   48 */
    uint64_t busy_ns;                       /*   48 ..   56 */
    uint64_t updated_ns;                    /*   56 ..   64 */
    uint64_t inflight;                      /*   64 ..   72 */
    uint32_t phase;                         /*   72 ..   76 */
    uint32_t pid;                           /*   76 ..   80 */
    uint64_t started_ns;                    /*   80 ..   88 */
    uint64_t owner_start;                   /*   88 ..   96 */
    uint64_t restarts;                      /*   96 ..  104 */
    uint64_t redelivered;                   /*  104 ..  112 */
    uint64_t duplicates;                    /*  112 ..  120 */
    uint64_t pending_skipped;               /*  120 ..  128 */
    char name[48];                          /*  128 ..  176 */
    uint32_t role;                          /*  176 ..  180 */
    uint32_t _reserved0;                    /*  180 ..  184 */
    uint64_t _reserved1;                    /*  184 ..  192 */
    char group[48];                         /*  192 ..  240 */
    uint64_t _reserved2[2];                 /*  240 ..  256 */
} byteor_node_row;
_Static_assert(offsetof(byteor_node_row, seq) == 0, "NodeRow.seq offset");
_Static_assert(offsetof(byteor_node_row, records_in) == 8, "NodeRow.records_in offset");
_Static_assert(offsetof(byteor_node_row, records_out) == 16, "NodeRow.records_out offset");
_Static_assert(offsetof(byteor_node_row, errors) == 24, "NodeRow.errors offset");
_Static_assert(offsetof(byteor_node_row, skipped) == 32, "NodeRow.skipped offset");
_Static_assert(offsetof(byteor_node_row, routed) == 40, "NodeRow.routed offset");
_Static_assert(offsetof(byteor_node_row, busy_ns) == 48, "NodeRow.busy_ns offset");
_Static_assert(offsetof(byteor_node_row, updated_ns) == 56, "NodeRow.updated_ns offset");
_Static_assert(offsetof(byteor_node_row, inflight) == 64, "NodeRow.inflight offset");
_Static_assert(offsetof(byteor_node_row, phase) == 72, "NodeRow.phase offset");
_Static_assert(offsetof(byteor_node_row, pid) == 76, "NodeRow.pid offset");
_Static_assert(offsetof(byteor_node_row, started_ns) == 80, "NodeRow.started_ns offset");
_Static_assert(offsetof(byteor_node_row, owner_start) == 88, "NodeRow.owner_start offset");
_Static_assert(offsetof(byteor_node_row, restarts) == 96, "NodeRow.restarts offset");
_Static_assert(offsetof(byteor_node_row, redelivered) == 104, "NodeRow.redelivered offset");
_Static_assert(offsetof(byteor_node_row, duplicates) == 112, "NodeRow.duplicates offset");
_Static_assert(offsetof(byteor_node_row, pending_skipped) == 120, "NodeRow.pending_skipped offset");
_Static_assert(offsetof(byteor_node_row, name) == 128, "NodeRow.name offset");
_Static_assert(offsetof(byteor_node_row, role) == 176, "NodeRow.role offset");
_Static_assert(offsetof(byteor_node_row, _reserved0) == 180, "NodeRow._reserved0 offset");
_Static_assert(offsetof(byteor_node_row, _reserved1) == 184, "NodeRow._reserved1 offset");
_Static_assert(offsetof(byteor_node_row, group) == 192, "NodeRow.group offset");
_Static_assert(offsetof(byteor_node_row, _reserved2) == 240, "NodeRow._reserved2 offset");
_Static_assert(sizeof(byteor_node_row) == 256, "sizeof NodeRow");

/* ---- geometry (mirrors byteor.lanes.layout.Geometry) -------------------------------- */

static inline uint64_t byteor_align(uint64_t n, uint64_t to) {
    return (n + to - 1) / to * to;
}

typedef struct byteor_geometry {
    uint64_t capacity;
    uint64_t slot_bytes;
    uint64_t max_consumers;
    uint64_t producer_offset;    /* the byteor_producer_block */
    uint64_t consumers_offset;   /* consumer block 0; block i at + i * sizeof */
    uint64_t descriptors_offset; /* capacity x byteor_slot_descriptor, 64-byte aligned */
    uint64_t payloads_offset;    /* capacity x slot_bytes, 64-byte aligned */
    uint64_t total_bytes;        /* the segment's size, 64-byte aligned */
} byteor_geometry;

static inline byteor_geometry byteor_geometry_of(uint64_t capacity, uint64_t slot_bytes,
                                                 uint64_t max_consumers) {
    byteor_geometry g;
    g.capacity = capacity;
    g.slot_bytes = slot_bytes;
    g.max_consumers = max_consumers;
    g.producer_offset = sizeof(byteor_segment_header);
    g.consumers_offset = g.producer_offset + sizeof(byteor_producer_block);
    g.descriptors_offset = byteor_align(
        g.consumers_offset + max_consumers * sizeof(byteor_consumer_block), BYTEOR_CACHE_LINE);
    g.payloads_offset = byteor_align(
        g.descriptors_offset + capacity * sizeof(byteor_slot_descriptor), BYTEOR_CACHE_LINE);
    g.total_bytes = byteor_align(g.payloads_offset + capacity * slot_bytes, BYTEOR_CACHE_LINE);
    return g;
}

static inline uint64_t byteor_consumer_offset(const byteor_geometry *g, uint64_t index) {
    return g->consumers_offset + index * sizeof(byteor_consumer_block);
}

/* Sequence seq lives in slot seq & (capacity - 1). */
static inline uint64_t byteor_descriptor_offset(const byteor_geometry *g, uint64_t seq) {
    return g->descriptors_offset + (seq & (g->capacity - 1)) * sizeof(byteor_slot_descriptor);
}

static inline uint64_t byteor_payload_offset(const byteor_geometry *g, uint64_t seq) {
    return g->payloads_offset + (seq & (g->capacity - 1)) * g->slot_bytes;
}

/* ---- header checksum ------------------------------------------------------------------
 * header_crc is the CRC-32 of bytes [0, BYTEOR_HEADER_CRC_SPAN) (line 0: identity and
 * geometry), the zlib/PNG CRC: reflected polynomial 0xEDB88320, initial value and final xor
 * 0xFFFFFFFF. In Python: zlib.crc32(segment[:64]). Bitwise here: it runs once per attach. */

static inline uint32_t byteor_crc32(const void *data, size_t len) {
    const uint8_t *p = (const uint8_t *)data;
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return crc ^ 0xFFFFFFFFu;
}

/* ---- attach validation ------------------------------------------------------------------
 * A segment is untrusted input. Map the whole file, then call byteor_check_header with the
 * file's size before touching anything past the header. */

enum byteor_check {
    BYTEOR_OK = 0,
    BYTEOR_E_TRUNCATED = 1, /* smaller than its header or than its geometry */
    BYTEOR_E_MAGIC = 2,     /* not a lane, or still being created (magic is written last) */
    BYTEOR_E_VERSION = 3,   /* abi_version differs */
    BYTEOR_E_LAYOUT = 4,    /* layout_id differs: built from another layout */
    BYTEOR_E_KIND = 5,      /* unknown lane kind */
    BYTEOR_E_CHECKSUM = 6,  /* header_crc does not match line 0 */
    BYTEOR_E_GEOMETRY = 7   /* impossible capacity/slot_bytes/max_consumers/total_bytes */
};

static inline const char *byteor_check_name(int code) {
    switch (code) {
    case BYTEOR_OK: return "ok";
    case BYTEOR_E_TRUNCATED: return "truncated";
    case BYTEOR_E_MAGIC: return "bad magic";
    case BYTEOR_E_VERSION: return "bad ABI version";
    case BYTEOR_E_LAYOUT: return "bad layout id";
    case BYTEOR_E_KIND: return "bad kind";
    case BYTEOR_E_CHECKSUM: return "bad header checksum";
    case BYTEOR_E_GEOMETRY: return "bad geometry";
    default: return "unknown";
    }
}

static inline int byteor_check_header(const void *base, uint64_t file_bytes,
                                      byteor_geometry *out) {
    const byteor_segment_header *h = (const byteor_segment_header *)base;
    if (file_bytes < sizeof(byteor_segment_header)) return BYTEOR_E_TRUNCATED;
    if (memcmp(h->magic, BYTEOR_MAGIC, BYTEOR_MAGIC_LEN) != 0) return BYTEOR_E_MAGIC;
    if (h->abi_version != BYTEOR_ABI_VERSION) return BYTEOR_E_VERSION;
    if (h->layout_id != BYTEOR_LAYOUT_ID) return BYTEOR_E_LAYOUT;
    if (h->kind < BYTEOR_KIND_EVENTS || h->kind > BYTEOR_KIND_FANOUT) return BYTEOR_E_KIND;
    if (byteor_crc32(base, BYTEOR_HEADER_CRC_SPAN) != h->header_crc) return BYTEOR_E_CHECKSUM;
    if (h->capacity < BYTEOR_MIN_CAPACITY || h->capacity > BYTEOR_MAX_CAPACITY
        || (h->capacity & (h->capacity - 1)) != 0
        || h->slot_bytes < BYTEOR_MIN_SLOT_BYTES || h->slot_bytes > BYTEOR_MAX_SLOT_BYTES
        || h->slot_bytes % 8 != 0
        || h->max_consumers < 1 || h->max_consumers > BYTEOR_MAX_CONSUMERS)
        return BYTEOR_E_GEOMETRY;
    byteor_geometry g = byteor_geometry_of(h->capacity, h->slot_bytes, h->max_consumers);
    if (h->total_bytes != g.total_bytes) return BYTEOR_E_GEOMETRY;
    if (file_bytes < g.total_bytes) return BYTEOR_E_TRUNCATED;
    if (file_bytes != g.total_bytes) return BYTEOR_E_GEOMETRY;
    if (out) *out = g;
    return BYTEOR_OK;
}

/* ---- reading protocol -------------------------------------------------------------------
 * One producer, cursors are counts (the producer's: messages published; a consumer's:
 * messages it has released, i.e. the next sequence it reads). For a consumer on line c:
 *
 *   1. avail = acquire-load producer->cursor     (__atomic_load_n(.., __ATOMIC_ACQUIRE))
 *      The producer wrote payload and descriptor before its release of the cursor, so
 *      every slot below avail is complete once this load returns.
 *   2. for seq in [consumer->cursor, avail):
 *        i = seq & (capacity - 1)
 *        d = descriptor[i]                          at descriptors_offset + i * 16
 *        check d.seq == seq and d.length <= slot_bytes (untrusted: never read past the slot)
 *        payload = d.length bytes                   at payloads_offset + i * slot_bytes
 *   3. release-store consumer->cursor = seq + 1   (__atomic_store_n(.., __ATOMIC_RELEASE))
 *      only when done with the slot: from then on the producer may overwrite it.
 *   4. if the producer is asleep waiting for room (producer->sleeping != 0), wake it with
 *      futex(FUTEX_WAKE) on the low 32 bits of consumer->cursor. Optional: the producer's
 *      sleeps are bounded and re-check, so a missed wake costs a short delay, never a hang.
 *   5. producer->closed != 0 and consumer->cursor == producer->cursor: end of stream.
 *
 * This is the protocol of a gating consumer (state BYTEOR_STATE_GATING), e.g. consumer line
 * 0 of an events lane, which the creator registers: the producer never rewrites a slot such
 * a consumer has not released. An overrun consumer (BYTEOR_STATE_OVERRUN) holds nobody
 * back, so its slot may be rewritten while it reads: it copies the payload (at most
 * slot_bytes), then calls byteor_overrun_intact; a false answer means the copy may be torn,
 * and it skips ahead to producer->claimed - capacity, adding what it skipped to
 * consumer->lost. (The producer announces in claimed how far it may write before writing.)
 */

static inline uint64_t byteor_load_acquire(const uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void byteor_store_release(uint64_t *p, uint64_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static inline byteor_producer_block *byteor_producer(void *base, const byteor_geometry *g) {
    return (byteor_producer_block *)((uint8_t *)base + g->producer_offset);
}

static inline byteor_consumer_block *byteor_consumer(void *base, const byteor_geometry *g,
                                                     uint64_t index) {
    return (byteor_consumer_block *)((uint8_t *)base + byteor_consumer_offset(g, index));
}

static inline const byteor_slot_descriptor *byteor_descriptor(const void *base,
                                                              const byteor_geometry *g,
                                                              uint64_t seq) {
    return (const byteor_slot_descriptor *)((const uint8_t *)base
                                            + byteor_descriptor_offset(g, seq));
}

static inline const uint8_t *byteor_payload(const void *base, const byteor_geometry *g,
                                            uint64_t seq) {
    return (const uint8_t *)base + byteor_payload_offset(g, seq);
}

/* After copying sequence seq: whether the producer cannot have started rewriting its slot.
 * It writes only below the claimed it announced first, so the slot is intact while
 * claimed <= seq + capacity. The fence keeps the copy's loads before this load (free on
 * x86-64). */
static inline int byteor_overrun_intact(const byteor_producer_block *producer, uint64_t seq,
                                        uint64_t capacity) {
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return __atomic_load_n(&producer->claimed, __ATOMIC_RELAXED) <= seq + capacity;
}

/* A gating consumer on one line, following the protocol above. */
typedef struct byteor_reader {
    void *base;
    byteor_geometry geom;
    byteor_producer_block *producer;
    byteor_consumer_block *consumer;
    uint64_t next;  /* the next sequence to read; consumer->cursor once released */
    uint64_t avail; /* the producer cursor as last loaded */
} byteor_reader;

static inline void byteor_reader_init(byteor_reader *r, void *base, const byteor_geometry *g,
                                      uint64_t consumer_index) {
    r->base = base;
    r->geom = *g;
    r->producer = byteor_producer(base, g);
    r->consumer = byteor_consumer(base, g, consumer_index);
    r->next = __atomic_load_n(&r->consumer->cursor, __ATOMIC_RELAXED);
    r->avail = byteor_load_acquire(&r->producer->cursor);
}

enum byteor_poll {
    BYTEOR_POLL_MESSAGE = 1, /* payload and length hold the message at r->next */
    BYTEOR_POLL_EMPTY = 0,   /* nothing published yet: spin, yield or sleep, then retry */
    BYTEOR_POLL_CLOSED = -1, /* the producer closed the lane and everything was read */
    BYTEOR_POLL_CORRUPT = -2 /* the descriptor is impossible: stop reading this segment */
};

/* Look at the next message without releasing it; valid until byteor_reader_release. */
static inline int byteor_reader_poll(byteor_reader *r, const uint8_t **payload,
                                     uint32_t *length) {
    if (r->next >= r->avail) {
        r->avail = byteor_load_acquire(&r->producer->cursor);
        if (r->next > r->avail) return BYTEOR_POLL_CORRUPT; /* a cursor beyond the producer */
        if (r->next == r->avail) {
            if (__atomic_load_n(&r->producer->closed, __ATOMIC_ACQUIRE) != 0) {
                r->avail = byteor_load_acquire(&r->producer->cursor);
                if (r->next >= r->avail) return BYTEOR_POLL_CLOSED;
            } else {
                return BYTEOR_POLL_EMPTY;
            }
        }
    }
    if (r->avail - r->next > r->geom.capacity) return BYTEOR_POLL_CORRUPT;
    const byteor_slot_descriptor *d = byteor_descriptor(r->base, &r->geom, r->next);
    if (d->seq != r->next || d->length > r->geom.slot_bytes) return BYTEOR_POLL_CORRUPT;
    *payload = byteor_payload(r->base, &r->geom, r->next);
    *length = d->length;
    return BYTEOR_POLL_MESSAGE;
}

/* Hand the slot back. Returns nonzero if the producer sleeps and wants a futex wake on
 * (uint32_t *)&r->consumer->cursor. */
static inline int byteor_reader_release(byteor_reader *r) {
    r->next += 1;
    byteor_store_release(&r->consumer->cursor, r->next);
    return __atomic_load_n(&r->producer->sleeping, __ATOMIC_ACQUIRE) != 0;
}

#endif /* BYTEOR_V1_H */
