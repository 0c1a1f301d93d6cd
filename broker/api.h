/*
 * api.h — request dispatch: the table of supported Kafka APIs and versions
 * (what ApiVersions advertises is exactly this table) and the handlers.
 *
 * A handler runs on the connection's loop with the body of one request.  It
 * parses the whole body before changing any state (STYLE §10).  It returns
 * API_MALFORMED if the body does not parse (the connection is then closed,
 * as Kafka does), API_OK otherwise, having either finished the request
 * (req_finish) or arranged for something to finish it later.
 */
#ifndef SLUICE_API_H
#define SLUICE_API_H

#include <stdint.h>

#include "conn.h"
#include "wire.h"

enum { API_OK = 0, API_MALFORMED = -1 };

enum {
	API_PRODUCE = 0,
	API_FETCH = 1,
	API_LIST_OFFSETS = 2,
	API_METADATA = 3,
	API_API_VERSIONS = 18,
	API_CREATE_TOPICS = 19,
	API_DELETE_TOPICS = 20,
};

typedef int (*api_handler)(req *r, wire_rd *rd);

typedef struct api_def {
	int16_t key;
	int16_t min, max;
	api_handler fn;
	const char *name;
} api_def;

/* The entry for key, or NULL if unsupported. */
const api_def *api_find(int16_t key);
/* Entries, for ApiVersions. */
const api_def *api_table(int *n);

int api_versions(req *r, wire_rd *rd);
int api_metadata(req *r, wire_rd *rd);
int api_create_topics(req *r, wire_rd *rd);
int api_delete_topics(req *r, wire_rd *rd);
int api_produce(req *r, wire_rd *rd);
int api_fetch(req *r, wire_rd *rd);
int api_list_offsets(req *r, wire_rd *rd);
int api_init_producer_id(req *r, wire_rd *rd);
int api_describe_configs(req *r, wire_rd *rd);
int api_alter_configs(req *r, wire_rd *rd);

/* Writes ApiVersions error 35 in the v0 layout (for a version we do not
 * support) into r and finishes it. */
void api_versions_unsupported(req *r);

#endif
