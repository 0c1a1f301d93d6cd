/* server.c — see server.h. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "blog.h"
#include "conn.h"
#include "txn_api.h"

int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int resolve(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res;
	char portstr[16];
	int rc;

	snprintf(portstr, sizeof(portstr), "%d", port);
	rc = getaddrinfo(host, portstr, &hints, &res);
	if (rc != 0) {
		blog(BLOG_ERROR, "cannot resolve listener host '%s': %s", host, gai_strerror(rc));
		return -EINVAL;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static int listen_socket(const struct sockaddr_storage *ss, socklen_t len)
{
	int one = 1;
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)ss, len) < 0 || listen(fd, 1024) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

static void set_port(struct sockaddr_storage *ss, int port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

static void on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
	worker *w = io->data;

	for (int i = 0; i < 64; i++) {
		int fd = accept4(w->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				/* Out of descriptors: stop accepting for a moment
				 * rather than spin on a readable listener. */
				BLOG_RL(BLOG_WARN, "accept: %s; pausing accepts for 100 ms", strerror(errno));
				ev_io_stop(loop, &w->accept_w);
				/* re-arm: a one-shot timer restarted as is fires at once */
				ev_timer_set(&w->pause_w, 0.1, 0.);
				ev_timer_start(loop, &w->pause_w);
			}
			return;
		}
		if (atomic_fetch_add(&w->srv->nconns, 1) >= w->srv->cfg->max_connections) {
			atomic_fetch_sub(&w->srv->nconns, 1);
			BLOG_RL(BLOG_WARN, "max.connections (%d) reached: closing a new connection",
				w->srv->cfg->max_connections);
			close(fd);
			continue;
		}
		conn_accept(w, fd);
	}
}

static void on_pause_end(struct ev_loop *loop, ev_timer *t, int revents)
{
	worker *w = t->data;

	ev_io_start(loop, &w->accept_w);
}

static void on_async(struct ev_loop *loop, ev_async *a, int revents)
{
	worker *w = a->data;
	loop_task *t;

	pthread_mutex_lock(&w->q_lock);
	t = w->q_head;
	w->q_head = w->q_tail = NULL;
	pthread_mutex_unlock(&w->q_lock);
	/* a round of SQLite answers: one write per connection (conn.h) */
	conn_defer_begin(w);
	while (t) {
		loop_task *next = t->next; /* t may be freed by its fn */

		t->fn(t);
		t = next;
	}
	conn_defer_end(w);
	if (atomic_load(&w->stop)) {
		while (w->conns)
			conn_shutdown(w->conns);
		ev_break(loop, EVBREAK_ALL);
	}
}

/* This thread's deferred wake-ups (worker_post_defer): the loops that got
 * a task since and are not woken yet.  Past DEFER_MAX loops, posts wake at
 * once. */
#define DEFER_MAX 16
static __thread struct {
	int depth;
	int n;
	worker *w[DEFER_MAX];
} deferred;

/* True if w's wake-up is left to worker_post_flush. */
static bool defer_wake(worker *w)
{
	if (deferred.depth == 0)
		return false;
	for (int i = 0; i < deferred.n; i++)
		if (deferred.w[i] == w)
			return true;
	if (deferred.n == DEFER_MAX)
		return false;
	deferred.w[deferred.n++] = w;
	return true;
}

void worker_post(worker *w, loop_task *t)
{
	t->next = NULL;
	pthread_mutex_lock(&w->q_lock);
	if (w->q_tail)
		w->q_tail->next = t;
	else
		w->q_head = t;
	w->q_tail = t;
	pthread_mutex_unlock(&w->q_lock);
	if (!defer_wake(w))
		ev_async_send(w->loop, &w->async_w);
}

void worker_post_defer(void)
{
	deferred.depth++;
}

void worker_post_flush(void)
{
	if (--deferred.depth > 0)
		return;
	for (int i = 0; i < deferred.n; i++)
		ev_async_send(deferred.w[i]->loop, &deferred.w[i]->async_w);
	deferred.n = 0;
}

int server_listen(server *srv)
{
	const config *cfg = srv->cfg;
	struct sockaddr_storage ss;
	socklen_t len;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int rc;

	srv->nworkers = cfg->network_threads > 0 ? cfg->network_threads : (int)(ncpu > 0 ? ncpu : 1);
	srv->workers = calloc((size_t)srv->nworkers, sizeof(*srv->workers));
	if (!srv->workers)
		return -ENOMEM;
	rc = resolve(cfg->listen_host, cfg->listen_port, &ss, &len);
	if (rc < 0)
		return rc;
	for (int i = 0; i < srv->nworkers; i++) {
		worker *w = &srv->workers[i];

		w->id = i;
		w->srv = srv;
		w->listen_fd = -1;
		w->pacer.tfd = -1; /* pacer_free is a no-op until pacer_init */
		pthread_mutex_init(&w->q_lock, NULL);
		w->listen_fd = listen_socket(&ss, len);
		if (w->listen_fd < 0) {
			blog(BLOG_ERROR, "cannot listen on %s:%d: %s", cfg->listen_host, ntohs(((struct sockaddr_in *)&ss)->sin_port),
			     strerror(-w->listen_fd));
			return w->listen_fd;
		}
		if (i == 0) {
			/* Port 0: the kernel picked one; the other workers share it. */
			struct sockaddr_storage bound;
			socklen_t blen = sizeof(bound);

			getsockname(w->listen_fd, (struct sockaddr *)&bound, &blen);
			srv->port = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
								    : ((struct sockaddr_in6 *)&bound)->sin6_port);
			set_port(&ss, srv->port);
		}
		w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
		if (!w->loop)
			return -ENOMEM;
		ev_io_init(&w->accept_w, on_accept, w->listen_fd, EV_READ);
		w->accept_w.data = w;
		ev_io_start(w->loop, &w->accept_w);
		ev_timer_init(&w->pause_w, on_pause_end, 0.1, 0.);
		w->pause_w.data = w;
		ev_async_init(&w->async_w, on_async);
		w->async_w.data = w;
		ev_async_start(w->loop, &w->async_w);
		rc = pacer_init(&w->pacer, w->loop);
		if (rc < 0) {
			blog(BLOG_ERROR, "cannot create the precise timer of loop %d: %s", i, strerror(-rc));
			return rc;
		}
	}
	return 0;
}

static void *worker_main(void *arg)
{
	worker *w = arg;
	char name[16];

	snprintf(name, sizeof(name), "sl-loop%d", w->id);
	pthread_setname_np(pthread_self(), name);
	ev_run(w->loop, 0);
	return NULL;
}

int server_start(server *srv)
{
	for (int i = 0; i < srv->nworkers; i++) {
		int rc = pthread_create(&srv->workers[i].thread, NULL, worker_main, &srv->workers[i]);

		if (rc != 0)
			return -rc;
	}
	return 0;
}

void server_stop(server *srv)
{
	for (int i = 0; i < srv->nworkers; i++) {
		worker *w = &srv->workers[i];

		if (!w->loop)
			continue;
		atomic_store(&w->stop, true);
		ev_async_send(w->loop, &w->async_w);
	}
	for (int i = 0; i < srv->nworkers; i++) {
		worker *w = &srv->workers[i];

		if (w->thread)
			pthread_join(w->thread, NULL);
	}
}

void server_free(server *srv)
{
	for (int i = 0; srv->workers && i < srv->nworkers; i++) {
		worker *w = &srv->workers[i];

		if (w->loop) {
			/* Tasks posted after the loop stopped (late SQLite
			 * completions) run here so their memory is freed. */
			loop_task *t = w->q_head;

			while (t) {
				loop_task *next = t->next;

				t->fn(t);
				t = next;
			}
			req_cache_free(w);
			txn_api_cache_free(w);
			pacer_free(&w->pacer);
			ev_loop_destroy(w->loop);
		}
		if (w->listen_fd >= 0)
			close(w->listen_fd);
		pthread_mutex_destroy(&w->q_lock);
	}
	free(srv->workers);
	srv->workers = NULL;
}
