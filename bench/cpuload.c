/*
 * cpuload.c — see cpuload.h.
 */
#include "cpuload.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static double machine_busy(double *steal)
{
	unsigned long long user = 0, nice = 0, sys = 0, idle = 0, iowait = 0, irq = 0, softirq = 0,
			   st = 0;
	double tck = (double)sysconf(_SC_CLK_TCK);
	FILE *f = fopen("/proc/stat", "r");

	*steal = 0;
	if (!f)
		return 0;
	if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &sys, &idle,
		   &iowait, &irq, &softirq, &st) != 8)
		user = nice = sys = st = 0;
	fclose(f);
	*steal = (double)st / tck;
	return (double)(user + nice + sys + irq + softirq + st) / tck;
}

static double process_cpu(int pid)
{
	unsigned long utime = 0, stime = 0;
	char path[64];
	FILE *f;

	if (pid <= 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	/* fields 14 and 15; the command name (field 2) has no ')' inside for
	 * sluiced, so skipping to the last ')' is enough */
	if (fscanf(f, "%*d (%*[^)]) %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime,
		   &stime) != 2)
		utime = stime = 0;
	fclose(f);
	return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

void cpuload_snap_take(cpuload_snap *s, int broker_pid)
{
	struct rusage ru;
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	s->mono_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	s->busy_s = machine_busy(&s->steal_s);
	getrusage(RUSAGE_SELF, &ru);
	s->self_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
		    (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	s->broker_s = process_cpu(broker_pid);
}

double cpuload_other_cores(const cpuload_snap *a, const cpuload_snap *b, double *steal_cores)
{
	double dt = (double)(b->mono_ns - a->mono_ns) / 1e9;
	double other;

	if (dt <= 0) {
		*steal_cores = 0;
		return 0;
	}
	other = (b->busy_s - a->busy_s) - (b->self_s - a->self_s) - (b->broker_s - a->broker_s);
	*steal_cores = (b->steal_s - a->steal_s) / dt;
	return other > 0 ? other / dt : 0;
}

/* ---- the wake-up probe ---- */

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *probe_main(void *arg)
{
	cpuload_probe *p = arg;
	int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	int64_t t = mono_ns();

	while (fd >= 0 && p->n < p->cap && !__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
		struct itimerspec its = { { 0, 0 }, { 0, 0 } };
		uint64_t ticks;
		int64_t late;

		t += 1000000;
		its.it_value.tv_sec = (time_t)(t / 1000000000);
		its.it_value.tv_nsec = (long)(t % 1000000000);
		timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, NULL);
		if (read(fd, &ticks, sizeof(ticks)) < 0)
			break;
		late = mono_ns() - t;
		p->late_ns[p->n++] = late;
		t += late; /* the next sleep is 1 ms after this wake-up */
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

int cpuload_probe_start(cpuload_probe *p, long cap)
{
	int rc;

	*p = (cpuload_probe){ .cap = cap };
	p->late_ns = malloc(sizeof(int64_t) * (size_t)(cap > 0 ? cap : 1));
	if (!p->late_ns)
		return -ENOMEM;
	rc = pthread_create(&p->thread, NULL, probe_main, p);
	if (rc != 0) {
		free(p->late_ns);
		p->late_ns = NULL;
		return -rc;
	}
	p->running = true;
	return 0;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

void cpuload_probe_stop(cpuload_probe *p, double *p50_us, double *p99_us, double *max_us)
{
	*p50_us = *p99_us = *max_us = 0;
	if (p->running) {
		__atomic_store_n(&p->stop, 1, __ATOMIC_RELEASE);
		pthread_join(p->thread, NULL);
		p->running = false;
	}
	if (p->n > 0) {
		qsort(p->late_ns, (size_t)p->n, sizeof(int64_t), cmp_i64);
		*p50_us = (double)p->late_ns[p->n / 2] / 1e3;
		*p99_us = (double)p->late_ns[(long)((double)p->n * 0.99)] / 1e3;
		*max_us = (double)p->late_ns[p->n - 1] / 1e3;
	}
	free(p->late_ns);
	p->late_ns = NULL;
}
