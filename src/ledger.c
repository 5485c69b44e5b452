/* The ledger's interface, whatever keeps it: the backends (one line each below, one file each
 * beside this one), the status names, and the entries' copies. */
#include "ledger.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A second backend is its file and one line here. */
static const struct ledger_backend *const ledger_backends[] = {
	&ledger_backend_sqlite,
	&ledger_backend_postgresql,
};

int ledger_open_backend(const char *backend, const char *where, bool read_only,
			struct ledger **ret, char *errbuf, size_t errsz)
{
	for (size_t i = 0; i < sizeof(ledger_backends) / sizeof(ledger_backends[0]); i++) {
		if (strcmp(ledger_backends[i]->name, backend) == 0)
			return ledger_backends[i]->open(where, read_only, ret, errbuf, errsz);
	}
	snprintf(errbuf, errsz, "no ledger backend named '%s'", backend);
	return -EINVAL;
}

int ledger_open(const char *state_dir, bool read_only, struct ledger **ret, char *errbuf,
		size_t errsz)
{
	return ledger_open_backend(ledger_backends[0]->name, state_dir, read_only, ret, errbuf,
				   errsz);
}

static const char *const status_names[LEDGER_N_STATUSES] = {"claimed", "uploaded", "done",
							      "failed", "skipped"};

const char *ledger_status_name(enum ledger_status s)
{
	return s < LEDGER_N_STATUSES ? status_names[s] : "unknown";
}

int ledger_status_parse(const char *s, enum ledger_status *ret)
{
	for (int i = 0; i < LEDGER_N_STATUSES; i++)
		if (s && strcmp(s, status_names[i]) == 0) {
			*ret = (enum ledger_status)i;
			return 0;
		}
	return -EINVAL;
}

void ledger_event_clear(struct ledger_event *ev)
{
	free(ev->msg_id);
	free(ev->channel);
	free(ev->type);
	free(ev->payload);
	memset(ev, 0, sizeof(*ev));
}

void ledger_outbox_row_clear(struct ledger_outbox_row *r)
{
	ledger_event_clear(&r->ev);
	memset(r, 0, sizeof(*r));
}

void ledger_entry_clear(struct ledger_entry *e)
{
	for (size_t i = 0; i < e->n_events; i++)
		ledger_event_clear(&e->events[i]);
	free(e->events);
	free(e->folder);
	free(e->file);
	free(e->import_ids);
	free(e->error);
	free(e->duplicate_of);
	free(e->host);
	memset(e, 0, sizeof(*e));
}

static int dup_opt(char **dst, const char *src)
{
	*dst = NULL;
	if (!src)
		return 0;
	*dst = strdup(src);
	return *dst ? 0 : -ENOMEM;
}

int ledger_entry_copy(struct ledger_entry *dst, const struct ledger_entry *src)
{
	*dst = *src;
	dst->folder = dst->file = dst->import_ids = dst->error = dst->duplicate_of = NULL;
	dst->host = NULL;
	dst->events = NULL;
	dst->n_events = 0;
	if (dup_opt(&dst->folder, src->folder) < 0 || dup_opt(&dst->file, src->file) < 0 ||
	    dup_opt(&dst->import_ids, src->import_ids) < 0 || dup_opt(&dst->error, src->error) < 0 ||
	    dup_opt(&dst->duplicate_of, src->duplicate_of) < 0 || dup_opt(&dst->host, src->host) < 0)
		goto nomem;
	if (src->n_events) {
		dst->events = calloc(src->n_events, sizeof(*dst->events));
		if (!dst->events)
			goto nomem;
		dst->n_events = src->n_events;
		for (size_t i = 0; i < src->n_events; i++) {
			const struct ledger_event *a = &src->events[i];
			struct ledger_event *b = &dst->events[i];

			b->created_at_ms = a->created_at_ms;
			if (dup_opt(&b->msg_id, a->msg_id) < 0 ||
			    dup_opt(&b->channel, a->channel) < 0 || dup_opt(&b->type, a->type) < 0 ||
			    dup_opt(&b->payload, a->payload) < 0)
				goto nomem;
		}
	}
	return 0;
nomem:
	ledger_entry_clear(dst);
	return -ENOMEM;
}

void ledger_fleet_clear(struct ledger_fleet *f)
{
	free(f->hosts);
	memset(f, 0, sizeof(*f));
}

bool ledger_fs_is_network(long f_type, const char **ret_name)
{
	static const struct {
		unsigned long magic;
		const char *name;
	} nets[] = {
		{0x6969, "nfs"},	    {0x517b, "smb"},       {0xff534d42, "cifs"},
		{0xfe534d42, "smb2"},	    {0x65735546, "fuse"},  {0x00c36400, "ceph"},
		{0x5346414f, "afs"},	    {0x6b414653, "kafs"},  {0x01021997, "9p"},
		{0x73757245, "coda"},	    {0x47504653, "gpfs"},  {0x0bd00bd0, "lustre"},
		{0x564c, "ncp"},	    {0x7461636f, "ocfs2"}, {0x01161970, "gfs2"},
	};

	for (size_t i = 0; i < sizeof(nets) / sizeof(nets[0]); i++)
		if ((unsigned long)(unsigned int)f_type == nets[i].magic) {
			if (ret_name)
				*ret_name = nets[i].name;
			return true;
		}
	return false;
}

