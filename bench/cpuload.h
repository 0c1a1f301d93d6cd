/*
 * cpuload.h — how much CPU did *other* processes use while a benchmark ran?
 *
 * On a small shared machine (2 cores, other builds and tests running) a
 * latency figure means little without it: a snapshot before and after the
 * run gives the machine's busy time (/proc/stat: everything but idle and
 * iowait), minus this process (getrusage) and the broker (/proc/PID/stat),
 * as an average number of cores.  Interrupt and softirq time count as busy:
 * with tick accounting the kernel charges them to the process that was
 * running, so our own loopback packets are in our times too.
 *
 * An average hides short bursts (a kernel thread holding a core for 1 ms
 * now and then), so there is also a probe: a thread that sleeps 1 ms at a
 * time (absolute timerfd deadlines) during the run and records how late it
 * wakes.  Its p99 is the scheduling delay any thread of this machine saw:
 * a broker cannot answer faster than it is given a core.
 *
 * Owns nothing but the probe's thread and buffer; Linux only.  Snapshots
 * are thread-safe (they read files); one probe is used by one thread.
 */
#ifndef SLUICE_BENCH_CPULOAD_H
#define SLUICE_BENCH_CPULOAD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct cpuload_snap {
	int64_t mono_ns;
	double busy_s;   /* whole machine: user + nice + system + steal */
	double steal_s;  /* of which taken by the hypervisor */
	double self_s;   /* this process, every thread */
	double broker_s; /* the broker process (0 if pid is 0 or gone) */
} cpuload_snap;

/* Fills *s now.  broker_pid 0: no broker figure. */
void cpuload_snap_take(cpuload_snap *s, int broker_pid);

/* Cores used on average between a and b by processes other than ours and
 * the broker's (>= 0), and by the hypervisor's steal in *steal_cores. */
double cpuload_other_cores(const cpuload_snap *a, const cpuload_snap *b, double *steal_cores);

/* The wake-up probe. */
typedef struct cpuload_probe {
	pthread_t thread;
	int64_t *late_ns;  /* owned: lateness of each wake-up */
	long n, cap;
	int stop;          /* set by cpuload_probe_stop */
	bool running;
} cpuload_probe;

/* Starts the probe thread (room for cap wake-ups, 1 ms apart).  Returns 0
 * or -errno; on failure nothing runs and stop returns zeros. */
int cpuload_probe_start(cpuload_probe *p, long cap);

/* Stops it and gives the lateness of its wake-ups in us: p50, p99 and max
 * (0 when it did not run).  Frees its memory. */
void cpuload_probe_stop(cpuload_probe *p, double *p50_us, double *p99_us, double *max_us);

#endif
