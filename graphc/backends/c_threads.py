"""The second core for long fused loops: a helper thread that takes chunks only when it is awake.

A long elementwise loop (the optimizer's update over every parameter, an
activation over a large batch) runs over chunks of its outer index.  The
calling thread publishes the loop, wakes one helper thread and then works
through the chunks itself, taking each from a shared counter; the helper takes
chunks from the same counter once it is running.  The caller waits only for
chunks the helper has already taken, never for the helper to wake up: a helper
the scheduler leaves asleep (a loaded machine, another library's threads
spinning on the other core) costs nothing but the wake-up call, where a
fork-join team (OpenMP) would wait for it at its closing barrier.

Every chunk is a disjoint range of the outer index, and each element's result
depends only on the same element of the operands (the memory plan's in-place
rule), so which thread runs a chunk does not change any result.  A loop that
accumulates across rows (a column sum) is never split.

``GRAPHC_THREADS=1`` keeps every loop on the calling thread (read at each
call, so it may change while the process runs); so does a process allowed a
single CPU.  A forked child starts its own helper when it first needs
one.  Calls from several Python threads at once (ctypes releases the GIL) run
one split loop at a time; the others run on their own thread, whole.
"""
from __future__ import annotations

# Elements per chunk, and the fewest elements a loop must have to be split: below that the
# wake-up call (a few µs) is not worth it.
CHUNK_ELEMENTS = 8192
MIN_SPLIT_ELEMENTS = 65536

SOURCE = r"""
#include <pthread.h>
#include <stdint.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
typedef void (*range_fn)(char **p, const int64_t *d, int64_t lo, int64_t hi);
static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake;
    int state;                 /* 0 not started, 1 running, -1 unavailable */
    atomic_int busy;           /* a caller is using the helper */
    long generation;           /* bumped for each published loop, under mu */
    range_fn fn; char **p; const int64_t *d; int64_t rows, chunk;
    atomic_llong next;         /* (generation << 32) | next chunk: claims carry the loop they are for */
    atomic_llong helped;       /* chunks the helper finished of the current loop */
    atomic_llong helped_total; /* and of all loops: what tests read to see the helper work */
} split = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

static int64_t split_chunks(void) { return (split.rows + split.chunk - 1) / split.chunk; }

static int split_claim(long generation, int64_t chunks, int64_t *chunk) {
    long long seen = atomic_load(&split.next);
    for (;;) {
        if ((seen >> 32) != (generation & 0x7fffffff) || (seen & 0xffffffff) >= chunks) return 0;
        if (atomic_compare_exchange_weak(&split.next, &seen, seen + 1)) { *chunk = seen & 0xffffffff; return 1; }
    }
}

static void split_run(long generation, range_fn fn, char **p, const int64_t *d, int64_t rows, int64_t size,
                      int64_t chunks, atomic_llong *count, atomic_llong *total) {
    int64_t c;
    while (split_claim(generation, chunks, &c)) {
        int64_t hi = (c + 1) * size;
        fn(p, d, c * size, hi < rows ? hi : rows);
        if (total) atomic_fetch_add(total, 1);
        atomic_fetch_add(count, 1);
    }
}

static void *split_helper(void *unused) {
    long seen = 0;
    (void)unused;
    for (;;) {
        pthread_mutex_lock(&split.mu);
        while (split.generation == seen) pthread_cond_wait(&split.wake, &split.mu);
        seen = split.generation;
        range_fn fn = split.fn; char **p = split.p; const int64_t *d = split.d;
        int64_t rows = split.rows, size = split.chunk, chunks = split_chunks();
        pthread_mutex_unlock(&split.mu);
        split_run(seen, fn, p, d, rows, size, chunks, &split.helped, &split.helped_total);
    }
    return NULL;
}

int64_t graphc_chunks_helped(void) { return atomic_load(&split.helped_total); }

static void split_after_fork(void) {
    /* The child has no helper: it starts one when it needs it.  A loop another thread of the
       parent was running is closed to claims, so that the child's new helper cannot pick it up. */
    pthread_mutex_init(&split.mu, NULL);
    pthread_cond_init(&split.wake, NULL);
    split.state = 0;
    atomic_store(&split.busy, 0);
    atomic_store(&split.next, ((long long)(split.generation & 0x7fffffff) << 32) | 0xffffffffLL);
}

static int one_thread_asked(void) {
    const char *threads = getenv("GRAPHC_THREADS");
    return threads && atoi(threads) == 1;
}

static int split_start(void) {
    cpu_set_t cpus;
    if (sched_getaffinity(0, sizeof cpus, &cpus) != 0 || CPU_COUNT(&cpus) < 2) return -1;
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int ok = pthread_create(&thread, &attr, split_helper, NULL) == 0;
    pthread_attr_destroy(&attr);
    if (ok) pthread_atfork(NULL, NULL, split_after_fork);
    return ok ? 1 : -1;
}

/* Run fn over rows [0, rows) of `per_row` elements each, split with the helper when long enough. */
static void split_rows(range_fn fn, char **p, const int64_t *d, int64_t rows, int64_t per_row) {
    int64_t total = rows * per_row;
    int expected = 0;
    if (total < MIN_SPLIT_ELEMENTS || one_thread_asked() || !atomic_compare_exchange_strong(&split.busy, &expected, 1)) {
        fn(p, d, 0, rows);
        return;
    }
    pthread_mutex_lock(&split.mu);
    if (split.state == 0) split.state = split_start();
    if (split.state < 0) {
        pthread_mutex_unlock(&split.mu);
        atomic_store(&split.busy, 0);
        fn(p, d, 0, rows);
        return;
    }
    int64_t size = CHUNK_ELEMENTS / (per_row > 0 ? per_row : 1);
    if (size < 1) size = 1;
    long generation = ++split.generation;
    split.fn = fn; split.p = p; split.d = d; split.rows = rows; split.chunk = size;
    atomic_store(&split.helped, 0);
    atomic_store(&split.next, (long long)(generation & 0x7fffffff) << 32);
    int64_t chunks = split_chunks();
    pthread_cond_signal(&split.wake);
    pthread_mutex_unlock(&split.mu);
    atomic_llong mine = 0;
    split_run(generation, fn, p, d, rows, size, chunks, &mine, NULL);
    /* Every chunk is taken now (a claim never passes the last): wait for those the helper runs. */
    while (atomic_load(&split.helped) + atomic_load(&mine) < chunks) sched_yield();
    atomic_store(&split.busy, 0);
}
"""


HELPED = "graphc_chunks_helped"  # the library's count of chunks its helper ran


def source() -> str:
    """The C runtime, with the chunk sizes filled in; it goes first in a library (``_GNU_SOURCE``
    must precede every header for ``sched_getaffinity``)."""
    return (f"#define _GNU_SOURCE\n#define CHUNK_ELEMENTS {CHUNK_ELEMENTS}\n"
            f"#define MIN_SPLIT_ELEMENTS {MIN_SPLIT_ELEMENTS}\n" + SOURCE)


def options() -> list[str]:
    return ["-pthread"]
