/*
 * kraw.h — a minimal raw Kafka client for the flow-control benchmarks
 * (reject_latency.c, release_pacing.c): one blocking TCP connection, framed
 * requests built by hand, responses read one whole frame at a time with the
 * kernel's arrival timestamp.
 *
 * Why raw and not libsluice: the figures are the broker's, so the client
 * must add as little as possible between "request written" and "response
 * read" — no I/O thread, no queue, no callback polling.  A Produce request
 * is built once and re-sent with a new correlation id (the id sits in the
 * header, outside the CRC of the record batch), so sending is one write.
 *
 * What it owns: the socket and a read buffer per kraw.  Nothing global.
 *
 * Threads: one thread may send while another receives on the same kraw
 * (kraw_send only touches the fd; kraw_recv owns the read buffer); two
 * senders or two receivers must not share one.
 *
 * Arrival time: with rx_timestamps the socket has SO_TIMESTAMPNS and
 * kraw_recv reports when the last bytes of the frame reached the socket
 * (CLOCK_REALTIME; on loopback that is the moment the broker wrote them),
 * so the figure does not include the time this process took to be
 * scheduled and read.  0 when the kernel gave none.
 *
 * Errors: -errno for system failures, -EPROTO for a malformed frame.
 */
#ifndef SLUICE_BENCH_KRAW_H
#define SLUICE_BENCH_KRAW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KRAW_ERR_THROTTLING 89 /* THROTTLING_QUOTA_EXCEEDED */

typedef struct kraw {
	int fd;
	uint8_t *rbuf; /* owned: kraw_recv's last frame, or kraw_read_frames'
			  bytes not yet a whole frame */
	size_t rcap, rlen;
} kraw;

/* Called by kraw_read_frames for each whole frame read. */
typedef int kraw_frame_fn(void *ctx, int32_t corr, const uint8_t *body, size_t len,
			  int64_t rx_real_ns);

/* A Produce v3 request for partition 0 of one topic, one uncompressed
 * RecordBatch of nrec records with vlen-byte values. */
typedef struct kraw_frame {
	uint8_t *data; /* owned: int32 size + request */
	size_t len;
} kraw_frame;

/* ---- connection ---- */

/* Connects to host:port (numeric IPv4, e.g. 127.0.0.1:9092), TCP_NODELAY.
 * Returns 0, or -errno (-EINVAL for a bad address) with *k closed. */
int kraw_connect(kraw *k, const char *hostport, bool rx_timestamps);

/* Closes the socket and frees the buffer; accepts a closed kraw. */
void kraw_close(kraw *k);

/* Writes all of buf (blocking).  Returns 0 or -errno. */
int kraw_send(kraw *k, const void *buf, size_t len);

/* Reads one whole response frame.  On success returns 0, *corr = its
 * correlation id, *body and *len = the rest (valid until the next kraw_recv),
 * *rx_real_ns = its kernel arrival time or 0.  Returns -errno (-ECONNRESET
 * when the broker closed) or -EPROTO, outputs unchanged. */
int kraw_recv(kraw *k, int32_t *corr, const uint8_t **body, size_t *len,
	      int64_t *rx_real_ns);

/* Reads what the socket has (blocking until at least one byte) and calls
 * fn for every whole frame in it, in order; a partial frame waits for the
 * next call.  One syscall for many frames, for high request rates.
 * rx_real_ns is the arrival time of the last bytes read (so, for frames
 * that came earlier in the same read, an upper bound).  Do not mix with
 * kraw_recv on one kraw.  Returns 0, the first non-zero return of fn, or
 * -errno / -EPROTO. */
int kraw_read_frames(kraw *k, kraw_frame_fn *fn, void *ctx);

/* ---- requests ---- */

/* Builds a Produce v3 frame (acks, timeout_ms) into *f.  Returns 0 or
 * -ENOMEM. */
int kraw_produce_frame(kraw_frame *f, const char *client_id, const char *topic, int nrec,
		       size_t vlen, int16_t acks, int32_t timeout_ms);

/* Sets the correlation id of a built frame. */
void kraw_frame_set_corr(kraw_frame *f, int32_t corr);

void kraw_frame_free(kraw_frame *f);

/* Parses a Produce v3 response body (after the correlation id) holding one
 * partition: its error, base offset and the throttle time.  Returns 0 or
 * -EPROTO. */
int kraw_parse_produce(const uint8_t *body, size_t len, int16_t *err, int64_t *base,
		       int32_t *throttle_ms);

/* Creates topic with nparts partitions and configs kv[0]=kv[1], ... (nkv
 * strings, pairs) with CreateTopics v1, synchronously.  Returns 0 and the
 * topic's error code in *err, or -errno / -EPROTO. */
int kraw_create_topic(kraw *k, const char *topic, int nparts, const char *const *kv, int nkv,
		      int16_t *err);

/* ---- clocks ---- */

int64_t kraw_mono_ns(void);
int64_t kraw_real_ns(void);

#endif
