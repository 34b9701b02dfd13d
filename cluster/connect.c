/*
 * Connections, stream creation, subject tokens and NATS errors.
 */
#include "cluster/cluster_internal.h"

#include <stdio.h>
#include <string.h>

#include <xxhash.h>

#include "common/internal.h"

/* Partitions up to this many bytes are spelled out in their token. */
#define TOKEN_PLAIN_MAX 32

int sc_cluster_nats_error(sc_error *err, const char *what, natsStatus s,
			  jsErrCode jerr)
{
	const char *last = nats_GetLastError(NULL);
	if (last && !*last)
		last = NULL;
	if (jerr)
		return sc_error_set(
		    err, SC_ENATS, "%s: %s (JetStream error %d)", what,
		    last ? last : natsStatus_GetText(s), (int)jerr);
	return sc_error_set(err, SC_ENATS, "%s: %s", what,
			    last ? last : natsStatus_GetText(s));
}

const char *sc_cluster_stream_name(const sc_cluster_options *opt, sc_error *err)
{
	const char *name =
	    opt && opt->stream ? opt->stream : SC_CLUSTER_DEFAULT_STREAM;
	size_t len = strlen(name);
	bool ok = len >= 1 && len <= SC_CLUSTER_STREAM_MAX;
	for (size_t i = 0; ok && i < len; i++) {
		char c = name[i];
		ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		     (c >= '0' && c <= '9') || c == '-' || c == '_';
	}
	if (!ok) {
		sc_error_set(err, SC_EINVAL,
			     "stream name \"%.64s\" is not 1..%d letters, "
			     "digits, '-' or '_'",
			     name, SC_CLUSTER_STREAM_MAX);
		return NULL;
	}
	return name;
}

int sc_cluster_partition_token(sc_str partition, char out[SC_CLUSTER_TOKEN_MAX],
			       sc_error *err)
{
	static const char hex[] = "0123456789abcdef";
	if (partition.len > SC_EVENT_FIELD_MAX)
		return sc_error_set(err, SC_EINVAL,
				    "partition of %zu bytes: at most %d",
				    partition.len, SC_EVENT_FIELD_MAX);
	const uint8_t *p = (const uint8_t *)partition.ptr;
	size_t n = partition.len;
	uint8_t digest[16];
	if (n > TOKEN_PLAIN_MAX) {
		XXH128_hash_t h = XXH3_128bits(p, n);
		XXH128_canonical_t c;
		XXH128_canonicalFromHash(&c, h);
		memcpy(digest, c.digest, sizeof digest);
		p = digest;
		n = sizeof digest;
		out[0] = 'h';
	} else {
		out[0] = 'x';
	}
	for (size_t i = 0; i < n; i++) {
		out[1 + 2 * i] = hex[p[i] >> 4];
		out[2 + 2 * i] = hex[p[i] & 15];
	}
	out[1 + 2 * n] = '\0';
	return 0;
}

int sc_cluster_connect(const sc_cluster_options *opt, natsConnection **nc,
		       jsCtx **js, sc_error *err)
{
	*nc = NULL;
	*js = NULL;
	if (!opt || !opt->url || !*opt->url)
		return sc_error_set(err, SC_EINVAL,
				    "no NATS URL given (e.g. "
				    "nats://127.0.0.1:4222)");
	/* Several URLs: the list of servers to (re)connect to. */
	enum { SERVERS_MAX = 32 };
	char urls[1024];
	const char *servers[SERVERS_MAX];
	int nservers = 0;
	if (strlen(opt->url) >= sizeof urls)
		return sc_error_set(err, SC_EINVAL,
				    "NATS URL list longer than %zu bytes",
				    sizeof urls - 1);
	snprintf(urls, sizeof urls, "%s", opt->url);
	for (char *save = NULL, *u = strtok_r(urls, ", ", &save); u;
	     u = strtok_r(NULL, ", ", &save)) {
		if (nservers == SERVERS_MAX)
			return sc_error_set(err, SC_EINVAL,
					    "more than %d NATS URLs",
					    SERVERS_MAX);
		servers[nservers++] = u;
	}
	if (nservers == 0)
		return sc_error_set(err, SC_EINVAL, "no NATS URL given");
	natsOptions *o = NULL;
	natsStatus s = natsOptions_Create(&o);
	if (s == NATS_OK)
		s = natsOptions_SetServers(o, servers, nservers);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(o, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(o, 100);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(o, 2000);
	if (s == NATS_OK)
		s = natsOptions_SetName(o, "statecache");
	if (s != NATS_OK) {
		natsOptions_Destroy(o);
		return sc_cluster_nats_error(err, "NATS options", s, 0);
	}
	s = natsConnection_Connect(nc, o);
	natsOptions_Destroy(o);
	if (s != NATS_OK) {
		char what[160];
		snprintf(what, sizeof what, "cannot connect to %.120s",
			 opt->url);
		*nc = NULL;
		return sc_cluster_nats_error(err, what, s, 0);
	}
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.Wait = opt->timeout_ms > 0 ? opt->timeout_ms : 5000;
	s = natsConnection_JetStream(js, *nc, &jo);
	if (s != NATS_OK) {
		natsConnection_Destroy(*nc);
		*nc = NULL;
		*js = NULL;
		return sc_cluster_nats_error(err, "JetStream context", s, 0);
	}
	return 0;
}

int sc_cluster_stream_create(const sc_cluster_options *opt, int replicas,
			     sc_error *err)
{
	const char *name = sc_cluster_stream_name(opt, err);
	if (!name)
		return SC_EINVAL;
	if (replicas < 1 || replicas > 5)
		return sc_error_set(err, SC_EINVAL, "replicas %d: must be 1..5",
				    replicas);
	natsConnection *nc;
	jsCtx *js;
	int rc = sc_cluster_connect(opt, &nc, &js, err);
	if (rc)
		return rc;
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	natsStatus s = js_GetStreamInfo(&si, js, name, NULL, &jerr);
	if (s == NATS_OK) {
		jsStreamInfo_Destroy(si);
		goto out;
	}
	char subject[SC_CLUSTER_STREAM_MAX + 3];
	snprintf(subject, sizeof subject, "%s.>", name);
	const char *subjects[] = {subject};
	jsStreamConfig cfg;
	jsStreamConfig_Init(&cfg);
	cfg.Name = name;
	cfg.Subjects = subjects;
	cfg.SubjectsLen = 1;
	cfg.Storage = js_FileStorage;
	cfg.Replicas = replicas;
	jerr = 0;
	s = js_AddStream(&si, js, &cfg, NULL, &jerr);
	if (s == NATS_OK)
		jsStreamInfo_Destroy(si);
	else
		rc = sc_cluster_nats_error(err, "creating the stream", s, jerr);
out:
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	return rc;
}
