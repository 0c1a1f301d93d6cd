/*
 * order.h — what the order service and the cart service agree on: the
 * order-created message (JSON), and the generated workload both derive from
 * one seed (the order service places the orders, the cart service seeds the
 * carts they are placed from).  Header-only so the example stays two .c
 * files; every function is static inline.
 *
 * The message (topic order-created, key = user id, value one line of JSON):
 *
 *     {"order_id":"5c0f3a9e12d4b7e1","user":"user-03","request":14,
 *      "items":[{"sku":"sku-07","qty":2},{"sku":"sku-11","qty":1}]}
 *
 *   order_id  16 lowercase hex digits, random: unique per attempt, so an
 *             attempt that was rolled back and its retry never share an id
 *   user      the cart's owner (also the key: one user's orders stay in
 *             one partition, in order)
 *   request   the workload's request number (the checkout's idempotency
 *             key); 0 for an order placed by hand
 *   items     1..ORDER_MAX_ITEMS lines, each sku once, qty >= 1
 *
 * Changing the format: add fields (order_parse() skips unknown keys), never
 * change the meaning of one; a consumer must keep reading old messages.
 */
#ifndef ORDER_CART_ORDER_H
#define ORDER_CART_ORDER_H

#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ORDER_MAX_ITEMS 4
#define ORDER_ID_LEN 16   /* hex digits */
#define ORDER_NAME_MAX 31 /* longest user id or sku */
#define ORDER_JSON_MAX 512 /* order_format() never needs more */
#define ORDER_CATALOG 12  /* sku-01 .. sku-12 */
#define ORDER_GIFT_SKU "gift-card" /* in every cart, never ordered */

struct order_item {
	char sku[ORDER_NAME_MAX + 1];
	int qty;
};

struct order {
	char order_id[ORDER_ID_LEN + 1];
	char user[ORDER_NAME_MAX + 1];
	long request;
	int nitems;
	struct order_item items[ORDER_MAX_ITEMS];
};

/* ---- the workload ----
 * Request n (1, 2, ...) of seed s over `users` users is always the same
 * checkout: its user, its items and whether the payment is declined.  The
 * cart service seeds each user's cart with the items of all of that user's
 * requests (plus one gift card), so whatever subset gets ordered, the carts
 * must end as "seed minus the committed orders". */

/* splitmix64: a good 64-bit mix in three lines. */
static inline uint64_t order_mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static inline void order_user_name(char *dst, size_t cap, int user)
{
	snprintf(dst, cap, "user-%02d", user);
}

/* Fills o (order_id left empty) with request n; *declined tells whether its
 * payment fails (about one request in ten). */
static inline void order_workload(uint64_t seed, long n, int users, struct order *o,
				  bool *declined)
{
	uint64_t r = order_mix(seed ^ order_mix((uint64_t)n));
	bool used[ORDER_CATALOG + 1] = { false };

	memset(o, 0, sizeof(*o));
	o->request = n;
	order_user_name(o->user, sizeof(o->user), 1 + (int)(r % (uint64_t)users));
	r = order_mix(r);
	o->nitems = 1 + (int)(r % 3);
	for (int i = 0; i < o->nitems; i++) {
		int sku;

		do {
			r = order_mix(r);
			sku = 1 + (int)(r % ORDER_CATALOG);
		} while (used[sku]);
		used[sku] = true;
		snprintf(o->items[i].sku, sizeof(o->items[i].sku), "sku-%02d", sku);
		o->items[i].qty = 1 + (int)((r >> 32) % 2);
	}
	r = order_mix(r);
	*declined = r % 10 == 0;
}

/* ---- JSON ---- */

/* Writes the message value into buf (cap >= ORDER_JSON_MAX is always
 * enough).  Returns its length, or -1 if it did not fit. */
static inline int order_format(const struct order *o, char *buf, size_t cap)
{
	size_t len;
	int n = snprintf(buf, cap, "{\"order_id\":\"%s\",\"user\":\"%s\",\"request\":%ld,\"items\":[",
			 o->order_id, o->user, o->request);

	if (n < 0 || (size_t)n >= cap)
		return -1;
	len = (size_t)n;
	for (int i = 0; i < o->nitems; i++) {
		n = snprintf(buf + len, cap - len, "%s{\"sku\":\"%s\",\"qty\":%d}", i ? "," : "",
			     o->items[i].sku, o->items[i].qty);
		if (n < 0 || (size_t)n >= cap - len)
			return -1;
		len += (size_t)n;
	}
	if (len + 3 > cap)
		return -1;
	memcpy(buf + len, "]}", 3);
	return (int)len + 2;
}

/* A cursor over the bytes of a message (not NUL-terminated). */
struct order_json {
	const char *p, *end;
};

static inline void order_json_ws(struct order_json *j)
{
	while (j->p < j->end && isspace((unsigned char)*j->p))
		j->p++;
}

static inline bool order_json_lit(struct order_json *j, char c)
{
	order_json_ws(j);
	if (j->p >= j->end || *j->p != c)
		return false;
	j->p++;
	return true;
}

/* A string without escapes (none of our fields needs one) into dst. */
static inline bool order_json_str(struct order_json *j, char *dst, size_t cap)
{
	size_t n = 0;

	if (!order_json_lit(j, '"'))
		return false;
	while (j->p < j->end && *j->p != '"') {
		if (*j->p == '\\' || (unsigned char)*j->p < 0x20 || n + 1 >= cap)
			return false;
		dst[n++] = *j->p++;
	}
	if (j->p >= j->end)
		return false;
	j->p++;
	dst[n] = '\0';
	return true;
}

static inline bool order_json_long(struct order_json *j, long *v)
{
	char buf[24], *e;
	size_t n = 0;

	order_json_ws(j);
	while (j->p < j->end && n + 1 < sizeof(buf) && (isdigit((unsigned char)*j->p) || *j->p == '-'))
		buf[n++] = *j->p++;
	buf[n] = '\0';
	if (!n)
		return false;
	*v = strtol(buf, &e, 10);
	return *e == '\0';
}

/* Skips one value of a key we do not know (no nesting beyond what the
 * string/number/array/object grammar needs). */
static inline bool order_json_skip(struct order_json *j, int depth)
{
	char tmp[ORDER_JSON_MAX];
	long v;

	order_json_ws(j);
	if (j->p >= j->end || depth > 8)
		return false;
	if (*j->p == '"')
		return order_json_str(j, tmp, sizeof(tmp));
	if (*j->p == '[' || *j->p == '{') {
		char close = *j->p == '[' ? ']' : '}';
		bool obj = close == '}';

		j->p++;
		if (order_json_lit(j, close))
			return true;
		do {
			if (obj && (!order_json_str(j, tmp, sizeof(tmp)) || !order_json_lit(j, ':')))
				return false;
			if (!order_json_skip(j, depth + 1))
				return false;
		} while (order_json_lit(j, ','));
		return order_json_lit(j, close);
	}
	return order_json_long(j, &v);
}

static inline bool order_json_item(struct order_json *j, struct order_item *it)
{
	char key[32];
	bool sku = false, qty = false;

	if (!order_json_lit(j, '{'))
		return false;
	do {
		long v;

		if (!order_json_str(j, key, sizeof(key)) || !order_json_lit(j, ':'))
			return false;
		if (!strcmp(key, "sku")) {
			sku = order_json_str(j, it->sku, sizeof(it->sku)) && it->sku[0];
			if (!sku)
				return false;
		} else if (!strcmp(key, "qty")) {
			qty = order_json_long(j, &v) && v > 0 && v <= 1000000;
			if (!qty)
				return false;
			it->qty = (int)v;
		} else if (!order_json_skip(j, 1)) {
			return false;
		}
	} while (order_json_lit(j, ','));
	return order_json_lit(j, '}') && sku && qty;
}

/* Parses a message value into o.  Returns false for anything that is not
 * a complete order (missing field, bad id, no items, too many, one sku
 * twice); o is then unspecified. */
static inline bool order_parse(const void *value, size_t len, struct order *o)
{
	struct order_json j = { value, (const char *)value + len };
	bool id = false, user = false, items = false;
	char key[32];

	memset(o, 0, sizeof(*o));
	if (!value || !order_json_lit(&j, '{'))
		return false;
	do {
		if (!order_json_str(&j, key, sizeof(key)) || !order_json_lit(&j, ':'))
			return false;
		if (!strcmp(key, "order_id")) {
			id = order_json_str(&j, o->order_id, sizeof(o->order_id)) &&
			     strlen(o->order_id) == ORDER_ID_LEN;
			for (int i = 0; id && i < ORDER_ID_LEN; i++)
				id = isxdigit((unsigned char)o->order_id[i]) &&
				     !isupper((unsigned char)o->order_id[i]);
			if (!id)
				return false;
		} else if (!strcmp(key, "user")) {
			user = order_json_str(&j, o->user, sizeof(o->user)) && o->user[0];
			if (!user)
				return false;
		} else if (!strcmp(key, "request")) {
			if (!order_json_long(&j, &o->request) || o->request < 0)
				return false;
		} else if (!strcmp(key, "items")) {
			if (!order_json_lit(&j, '['))
				return false;
			o->nitems = 0;
			do {
				if (o->nitems == ORDER_MAX_ITEMS ||
				    !order_json_item(&j, &o->items[o->nitems]))
					return false;
				for (int i = 0; i < o->nitems; i++)
					if (!strcmp(o->items[i].sku, o->items[o->nitems].sku))
						return false;
				o->nitems++;
			} while (order_json_lit(&j, ','));
			items = order_json_lit(&j, ']');
			if (!items)
				return false;
		} else if (!order_json_skip(&j, 1)) {
			return false;
		}
	} while (order_json_lit(&j, ','));
	if (!order_json_lit(&j, '}'))
		return false;
	order_json_ws(&j);
	return j.p == j.end && id && user && items;
}

#endif
