/*
 * statecache command: deterministic event generator (cli/gen.h).
 */
#include "cli/gen.h"

#include <stdio.h>
#include <string.h>

static uint64_t gen_rand(sc_cli_gen *g)
{
	/* splitmix64: small, fast, and the same stream on every platform */
	uint64_t z = (g->rng += 0x9E3779B97F4A7C15ULL);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static uint64_t mix(uint64_t z)
{
	z = (z ^ (z >> 33)) * 0xFF51AFD7ED558CCDULL;
	z = (z ^ (z >> 33)) * 0xC4CEB9FE1A85EC53ULL;
	return z ^ (z >> 33);
}

void sc_cli_gen_check_value(const char *id, size_t id_len, int64_t seq,
			    char out[17])
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (size_t i = 0; i < id_len; i++)
		h = (h ^ (unsigned char)id[i]) * 1099511628211ULL;
	snprintf(out, 17, "%016llx",
		 (unsigned long long)mix(h ^ (uint64_t)seq));
}

void sc_cli_gen_init(sc_cli_gen *g, uint64_t seed, uint32_t entities,
		     int64_t t0)
{
	memset(g, 0, sizeof *g);
	g->rng = seed;
	g->entities = entities ? entities : 1;
	g->t0 = t0;
}

/* ---- attribute catalogue --------------------------------------------------
 */

enum { DEVICE_ATTRS = 7, USER_ATTRS = 7 };
static const char *const device_names[DEVICE_ATTRS] = {
    "model", "fw", "temp", "battery", "online", "site", "key"};
static const char *const user_names[USER_ATTRS] = {
    "name", "age", "plan", "vip", "score", "locale", "avatar"};
static const char *const models[] = {"t-100", "t-200", "x-9", "nano"};
static const char *const sites[] = {"berlin", "lisbon", "osaka", "lima",
				    "oslo"};
static const char *const first_names[] = {"Ann",   "Bo",    "Chidi", "Dana",
					  "Émile", "Farah", "Gus",   "Hana"};
static const char *const plans[] = {"free", "pro", "team", "enterprise"};
static const char *const locales[] = {"en-GB", "de-DE", "ja-JP", "pt-BR"};

static sc_str cstr(const char *s)
{
	return (sc_str){s, strlen(s)};
}

/* Fill attribute `slot` with a value for attribute `k` of the kind. */
static void gen_value(sc_cli_gen *g, bool device, unsigned k, size_t slot)
{
	sc_attr *a = &g->attrs[slot];
	sc_value *v = &a->value;
	uint64_t r = gen_rand(g);
	a->name = cstr(device ? device_names[k] : user_names[k]);
	char *buf = g->strs[slot];
	if (device) {
		switch (k) {
		case 0:
			v->type = SC_VALUE_STRING;
			v->u.s = cstr(models[r % 4]);
			return;
		case 1:
			v->type = SC_VALUE_STRING;
			snprintf(buf, sizeof g->strs[0], "%u.%u.%u",
				 (unsigned)(r % 4), (unsigned)(r >> 8) % 20,
				 (unsigned)(r >> 16) % 100);
			v->u.s = cstr(buf);
			return;
		case 2:
			v->type = SC_VALUE_DOUBLE;
			v->u.d = (double)((int64_t)(r % 6000) - 1000) / 100.0;
			return;
		case 3:
			v->type = SC_VALUE_INT;
			v->u.i = (int64_t)(r % 101);
			return;
		case 4:
			v->type = SC_VALUE_BOOL;
			v->u.b = r & 1;
			return;
		case 5:
			v->type = SC_VALUE_STRING;
			v->u.s = cstr(sites[r % 5]);
			return;
		default:
			v->type = SC_VALUE_BYTES;
			for (int i = 0; i < 8; i++)
				g->bytes[i] = (unsigned char)(r >> (8 * i));
			v->u.s = (sc_str){(const char *)g->bytes, 8};
			return;
		}
	}
	switch (k) {
	case 0:
		v->type = SC_VALUE_STRING;
		snprintf(buf, sizeof g->strs[0], "%s %c.", first_names[r % 8],
			 (char)('A' + (r >> 8) % 26));
		v->u.s = cstr(buf);
		return;
	case 1:
		v->type = SC_VALUE_INT;
		v->u.i = 18 + (int64_t)(r % 70);
		return;
	case 2:
		v->type = SC_VALUE_STRING;
		v->u.s = cstr(plans[r % 4]);
		return;
	case 3:
		v->type = SC_VALUE_BOOL;
		v->u.b = r % 10 == 0;
		return;
	case 4:
		v->type = SC_VALUE_DOUBLE;
		v->u.d = (double)(r % 100000) / 1000.0;
		return;
	case 5:
		v->type = SC_VALUE_STRING;
		v->u.s = cstr(locales[r % 4]);
		return;
	default:
		v->type = SC_VALUE_STRING;
		snprintf(buf, sizeof g->strs[0],
			 "https://img.example/%016llx.png",
			 (unsigned long long)r);
		v->u.s = cstr(buf);
		return;
	}
}

sc_str sc_cli_gen_partition(uint32_t idx)
{
	static const char *const parts[] = {"eu", "us", "ap"};
	return cstr(parts[idx % 3]);
}

const sc_event *sc_cli_gen_next(sc_cli_gen *g)
{
	sc_event *ev = &g->ev;
	memset(ev, 0, sizeof *ev);
	g->count++;
	uint64_t r = gen_rand(g);
	uint32_t hot = g->entities / 100 ? g->entities / 100 : 1;
	uint32_t idx = r % 10 < 3 ? (uint32_t)((r >> 8) % hot)
				  : (uint32_t)((r >> 8) % g->entities);
	bool device = idx % 2 == 0;
	int n = snprintf(g->id, sizeof g->id, "%s-%06u",
			 device ? "device" : "user", idx);
	ev->entity = (sc_str){g->id, (size_t)n};
	ev->position = g->count;
	ev->time = g->t0 + (int64_t)(g->count - 1) * 1000000 +
		   (g->count % 7 == 0 ? 123456 : 0);
	static const char *const actors[] = {"svc-ingest", "svc-api",
					     "svc-billing", "ops"};
	ev->actor = cstr(actors[(r >> 40) % 4]);
	ev->partition = sc_cli_gen_partition(idx);
	unsigned tr = (unsigned)((r >> 48) % 20);
	if (tr == 0) {
		g->tags[0] = cstr("signup");
		ev->tags = g->tags;
		ev->ntags = 1;
	} else if (tr == 1) {
		g->tags[0] = cstr("batch");
		g->tags[1] = cstr("import");
		ev->tags = g->tags;
		ev->ntags = 2;
	}
	unsigned kind = (unsigned)((r >> 32) % 100);
	unsigned nk = device ? DEVICE_ATTRS : USER_ATTRS;
	size_t na = 0;
	if (kind < 87) {
		/* set / replace: some (set) or all (replace) attributes */
		ev->type = kind < 75 ? SC_EVENT_SET : SC_EVENT_REPLACE;
		unsigned start = (unsigned)(gen_rand(g) % nk);
		unsigned count = ev->type == SC_EVENT_SET
				     ? 1 + (unsigned)(gen_rand(g) % 3)
				     : nk;
		for (unsigned i = 0; i < count; i++)
			gen_value(g, device, (start + i) % nk, na++);
		/* a null in a set removes that key, now and then */
		if (ev->type == SC_EVENT_SET && count > 1 &&
		    gen_rand(g) % 10 == 0)
			g->attrs[na - 1].value.type = SC_VALUE_NULL;
		g->attrs[na].name = cstr("seq");
		g->attrs[na].value.type = SC_VALUE_INT;
		g->attrs[na].value.u.i = (int64_t)g->count;
		na++;
		sc_cli_gen_check_value(g->id, (size_t)n, (int64_t)g->count,
				       g->check);
		g->attrs[na].name = cstr("check");
		g->attrs[na].value.type = SC_VALUE_STRING;
		g->attrs[na].value.u.s = (sc_str){g->check, 16};
		na++;
	} else if (kind < 95) {
		ev->type = SC_EVENT_UNSET;
		unsigned start = (unsigned)(gen_rand(g) % nk);
		unsigned count = 1 + (unsigned)(gen_rand(g) % 2);
		for (unsigned i = 0; i < count; i++) {
			unsigned k = (start + i) % nk;
			g->attrs[na].name =
			    cstr(device ? device_names[k] : user_names[k]);
			g->attrs[na].value.type = SC_VALUE_NULL;
			na++;
		}
	} else {
		ev->type = SC_EVENT_DELETE;
	}
	ev->attrs = na ? g->attrs : NULL;
	ev->nattrs = na;
	return ev;
}
