/*
 * gate_cost.c — cost of one produce-gate decision as the broker makes it
 * (clock read + mutex + gate_decide), for the "< 5 % of produce throughput"
 * figure in docs/benchmarks.md.
 *
 *   gcc -O2 -I ratelimit bench/gate_cost.c ratelimit/gate.c \
 *       ratelimit/tokenbucket.c ratelimit/throttleq.c -lpthread -o /tmp/gate_cost
 *   /tmp/gate_cost
 */
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#include "gate.h"

int main(void)
{
	gate_conf c = { 1e12, 1000000000000ULL, 0, 0, 0, 0 };
	pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
	ratelimit_gate g;
	struct timespec a, b;
	long n = 20000000, admitted = 0;
	int64_t wait;

	gate_init(&g, &c);
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++) {
		clock_gettime(CLOCK_MONOTONIC, &b);
		pthread_mutex_lock(&m);
		admitted += gate_decide(&g, (int64_t)b.tv_sec * 1000000000 + b.tv_nsec, 1, 100, NULL,
					&wait) == GATE_ADMIT;
		pthread_mutex_unlock(&m);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("one gate decision (clock read + mutex + decide): %.1f ns (%ld admitted)\n",
	       ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n, admitted);
	return 0;
}
