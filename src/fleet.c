#include "fleet.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "ledgerq.h"
#include "log.h"

struct fleet {
	uv_loop_t *loop;
	/* A copy: the configuration may go with a reload before the fleet does. */
	struct config_fleet conf;
	const struct config_fleet *cfg; /* &conf */
	char host_id[CONFIG_HOST_ID_MAX + 1];
	struct ledgerq *lq;
	struct fleet_events ev;
	uv_timer_t timer;
	uint64_t instance;
	bool joined, ready, replaced, busy_told, lost_told;
	void *beat;            /* the heartbeat in the ledger's thread; NULL: none */
	void *takeover;        /* the end of a takeover there; NULL: none */
	uint64_t last_ok_ms;   /* loop clock: the last heartbeat that renewed the lease */
	struct ledger_host *hosts;
	size_t n_hosts;
	unsigned alive, index; /* as last told (share) */
	uint64_t pause_told_until; /* loop clock */
	char taking[CONFIG_HOST_ID_MAX + 1]; /* the host being taken over; "" none */
};

/* ---- the heartbeat ---- */

struct beat_call {
	struct fleet *f;
	struct ledger_beat b;
	char host_id[CONFIG_HOST_ID_MAX + 1];
	struct ledger_fleet res;
	int result;          /* 0, or -EBUSY: joining waits for a takeover */
	char error[512];
};

static int beat_work(struct ledger *l, void *data)
{
	struct beat_call *c = data;
	int r;

	ledger_fleet_clear(&c->res);
	if (!l->ops->fleet_beat) {
		snprintf(l->error, sizeof(l->error), "ledger (%s): a fleet needs the PostgreSQL "
			 "ledger", l->ops->name);
		return -ENOTSUP;
	}
	r = l->ops->fleet_beat(l, &c->b, &c->res);
	if (r == -EBUSY) {
		snprintf(c->error, sizeof(c->error), "%s", l->error);
		c->result = r;
		return 0;
	}
	c->result = r;
	return r;
}

static void beat_release(void *data)
{
	struct beat_call *c = data;

	ledger_fleet_clear(&c->res);
	free(c);
}

static bool fleet_lease_runs(const struct fleet *f)
{
	return f->joined && !f->replaced &&
	       uv_now(f->loop) - f->last_ok_ms < f->cfg->lease_ms - f->cfg->heartbeat_ms / 2;
}

/* Says READY when it changes. */
static void fleet_tell_ready(struct fleet *f)
{
	bool ready = fleet_lease_runs(f);

	if (ready == f->ready)
		return;
	f->ready = ready;
	if (!ready && f->joined && !f->replaced && !f->lost_told) {
		f->lost_told = true;
		log_warning("fleet: this host's lease could not be renewed for %llu s (the "
			    "database does not answer): no file is claimed until it is; files in "
			    "flight go on",
			    (unsigned long long)((uv_now(f->loop) - f->last_ok_ms) / 1000));
	}
	if (f->ev.ready)
		f->ev.ready(ready, f->ev.data);
}

static void fleet_note_hosts(struct fleet *f, struct ledger_fleet *res)
{
	unsigned alive = 0, index = 0;
	char names[512] = "";
	size_t len = 0;

	for (size_t i = 0; i < res->n_hosts; i++) {
		if (!res->hosts[i].alive)
			continue;
		if (strcmp(res->hosts[i].id, f->cfg->host_id) == 0)
			index = alive;
		alive++;
		len += (size_t)snprintf(names + len, len < sizeof(names) ? sizeof(names) - len : 0,
					"%s%s", alive > 1 ? ", " : "", res->hosts[i].id);
		if (len >= sizeof(names))
			len = sizeof(names) - 1;
	}
	free(f->hosts);
	f->hosts = res->hosts;
	f->n_hosts = res->n_hosts;
	res->hosts = NULL;
	res->n_hosts = 0;
	if (alive == 0)
		alive = 1; /* this host, whatever the clocks say */
	if (alive != f->alive)
		log_info("fleet: %u host%s alive (%s): each spends 1/%u of the team's rate limit%s",
			 alive, alive == 1 ? "" : "s", names, alive,
			 alive > 1 ? ", in turns" : "");
	f->alive = alive;
	f->index = index;
	/* Every heartbeat: the clocks drift. */
	if (f->ev.share)
		f->ev.share(alive, index, res->clock_offset_ms, f->ev.data);
}

static void beat_done(void *data)
{
	struct beat_call *c = data;
	struct fleet *f = c->f;

	f->beat = NULL;
	if (c->result == -EBUSY) {
		if (!f->busy_told)
			log_warning("fleet: %s", c->error);
		f->busy_told = true;
		return;
	}
	if (c->res.replaced) {
		if (!f->replaced)
			log_error("fleet: host '%s' was taken over by %s while this daemon could not "
				  "reach the database: its files are that host's now; stopping",
				  f->cfg->host_id, c->res.replaced_by);
		f->replaced = true;
		fleet_tell_ready(f);
		if (f->ev.replaced)
			f->ev.replaced(c->res.replaced_by, f->ev.data);
		return;
	}
	if (!f->joined) {
		log_info("fleet: joined as host '%s' (lease %llu s, heartbeat every %llu s)",
			 f->cfg->host_id, (unsigned long long)(f->cfg->lease_ms / 1000),
			 (unsigned long long)(f->cfg->heartbeat_ms / 1000));
		f->joined = true;
	} else if (f->lost_told) {
		log_info("fleet: this host's lease is renewed again: files are claimed again");
	}
	f->lost_told = false;
	f->last_ok_ms = uv_now(f->loop);
	fleet_note_hosts(f, &c->res);
	/* A pause told once; one that a later heartbeat reads again (a few ms apart on the
	 * database's clock) or extends is passed on without a word more. */
	if (c->res.pause_ms > 0 && f->ev.pause) {
		bool news = uv_now(f->loop) >= f->pause_told_until;

		f->pause_told_until = uv_now(f->loop) + (uint64_t)c->res.pause_ms;
		f->ev.pause((uint64_t)c->res.pause_ms, news, f->ev.data);
	}
	fleet_tell_ready(f);
	if (c->res.take_over[0] && !f->taking[0] && f->ev.take_over) {
		snprintf(f->taking, sizeof(f->taking), "%s", c->res.take_over);
		log_warning("fleet: host '%s' stopped renewing its lease: taking its files over",
			    f->taking);
		f->ev.take_over(f->taking, f->ev.data);
	}
}

static void fleet_beat(struct fleet *f)
{
	struct beat_call *c;

	if (f->beat || f->replaced)
		return;
	c = calloc(1, sizeof(*c));
	if (!c)
		return; /* the next tick tries again */
	c->f = f;
	snprintf(c->host_id, sizeof(c->host_id), "%s", f->cfg->host_id);
	c->b.host_id = c->host_id;
	c->b.instance = f->instance;
	c->b.lease_ms = (int64_t)f->cfg->lease_ms;
	c->b.in_flight = f->ev.in_flight ? f->ev.in_flight(f->ev.data) : 0;
	c->b.state = "running";
	c->b.joining = !f->joined;
	c->b.pause_ms = f->ev.own_pause_ms ? (int64_t)f->ev.own_pause_ms(f->ev.data) : 0;
	if (ledgerq_call(f->lq, beat_work, beat_done, beat_release, c, &f->beat) < 0) {
		f->beat = NULL;
		free(c);
	}
}

static void fleet_timer_cb(uv_timer_t *t)
{
	struct fleet *f = t->data;

	fleet_tell_ready(f);
	fleet_beat(f);
}

int fleet_new(uv_loop_t *loop, const struct config_fleet *cfg, struct ledgerq *lq,
	      const struct fleet_events *ev, struct fleet **ret)
{
	struct fleet *f = calloc(1, sizeof(*f));

	if (!f)
		return -ENOMEM;
	f->loop = loop;
	f->conf = *cfg;
	snprintf(f->host_id, sizeof(f->host_id), "%s", cfg->host_id);
	f->conf.host_id = f->host_id;
	f->cfg = &f->conf;
	f->lq = lq;
	f->ev = *ev;
	f->alive = 0;
	/* Tells two daemons with one host_id apart; not a secret. */
	if (getrandom(&f->instance, sizeof(f->instance), GRND_NONBLOCK) != sizeof(f->instance))
		f->instance = ((uint64_t)getpid() << 32) ^ uv_hrtime();
	uv_timer_init(loop, &f->timer);
	f->timer.data = f;
	uv_timer_start(&f->timer, fleet_timer_cb, 0, cfg->heartbeat_ms);
	*ret = f;
	return 0;
}

bool fleet_can_claim(const struct fleet *f)
{
	return f->ready;
}

const char *fleet_host_id(const struct fleet *f)
{
	return f->cfg->host_id;
}

/* ---- claims ---- */

struct claim_call {
	char host_id[CONFIG_HOST_ID_MAX + 1];
	char *folder, *file;
	bool mine;
	void (*cb)(bool mine, void *data);
	void *data;
};

static int claim_work(struct ledger *l, void *data)
{
	struct claim_call *c = data;
	int r = l->ops->fleet_claim(l, c->host_id, c->folder, c->file);

	if (r < 0)
		return r;
	c->mine = r > 0;
	return 0;
}

static int release_work(struct ledger *l, void *data)
{
	struct claim_call *c = data;

	return l->ops->fleet_release(l, c->host_id, c->folder, c->file);
}

static void claim_done(void *data)
{
	struct claim_call *c = data;

	c->cb(c->mine, c->data);
}

static void claim_release(void *data)
{
	struct claim_call *c = data;

	free(c->folder);
	free(c->file);
	free(c);
}

static struct claim_call *claim_call_new(struct fleet *f, const char *folder, const char *file)
{
	struct claim_call *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	snprintf(c->host_id, sizeof(c->host_id), "%s", f->cfg->host_id);
	c->folder = strdup(folder);
	c->file = strdup(file);
	if (!c->folder || !c->file) {
		claim_release(c);
		return NULL;
	}
	return c;
}

int fleet_claim(struct fleet *f, const char *folder, const char *file,
		void (*cb)(bool mine, void *data), void *data, void **ret)
{
	struct claim_call *c = claim_call_new(f, folder, file);
	int r;

	if (!c)
		return -ENOMEM;
	c->cb = cb;
	c->data = data;
	r = ledgerq_call(f->lq, claim_work, claim_done, claim_release, c, ret);
	if (r < 0)
		claim_release(c);
	return r;
}

void fleet_cancel(struct fleet *f, void *claim)
{
	ledgerq_cancel(f->lq, claim);
}

void fleet_release(struct fleet *f, const char *folder, const char *file)
{
	struct claim_call *c = claim_call_new(f, folder, file);

	/* Lost (no memory): the row stays until this host's takeover or next claim of the
	 * name, which is its own. */
	if (c && ledgerq_call(f->lq, release_work, NULL, claim_release, c, NULL) < 0)
		claim_release(c);
}

/* ---- takeover ---- */

struct takeover_call {
	struct fleet *f;
	char host_id[CONFIG_HOST_ID_MAX + 1], dead[CONFIG_HOST_ID_MAX + 1];
	unsigned moved;
};

static int takeover_work(struct ledger *l, void *data)
{
	struct takeover_call *c = data;

	return l->ops->fleet_taken_over(l, c->host_id, c->dead);
}

static void takeover_done(void *data)
{
	struct takeover_call *c = data;

	c->f->takeover = NULL;
	log_info("fleet: host '%s' is taken over: %u file%s moved here and resumed", c->dead,
		 c->moved, c->moved == 1 ? "" : "s");
	if (strcmp(c->f->taking, c->dead) == 0)
		c->f->taking[0] = '\0';
}

void fleet_took_over(struct fleet *f, const char *host, unsigned moved, unsigned left)
{
	struct takeover_call *c;

	if (left) {
		log_warning("fleet: %u file%s of host '%s' could not be moved here (a file of "
			    "the same name is here, or an error said above): tried again at the "
			    "next heartbeat",
			    left, left == 1 ? "" : "s", host);
		f->taking[0] = '\0';
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		f->taking[0] = '\0';
		return;
	}
	c->f = f;
	c->moved = moved;
	snprintf(c->host_id, sizeof(c->host_id), "%s", f->cfg->host_id);
	snprintf(c->dead, sizeof(c->dead), "%s", host);
	if (ledgerq_call(f->lq, takeover_work, takeover_done, free, c, &f->takeover) < 0) {
		free(c);
		f->takeover = NULL;
		f->taking[0] = '\0';
	}
}

/* ---- status, stop ---- */

const struct ledger_host *fleet_hosts(const struct fleet *f, size_t *ret_n)
{
	*ret_n = f->n_hosts;
	return f->hosts;
}

int64_t fleet_last_beat_ago_ms(const struct fleet *f)
{
	return f->joined ? (int64_t)(uv_now(f->loop) - f->last_ok_ms) : -1;
}

struct leave_call {
	char host_id[CONFIG_HOST_ID_MAX + 1];
	uint64_t instance;
	bool empty;
};

static int leave_work(struct ledger *l, void *data)
{
	struct leave_call *c = data;

	return l->ops->fleet_leave(l, c->host_id, c->instance, c->empty);
}

static void fleet_closed_cb(uv_handle_t *h)
{
	struct fleet *f = h->data;

	free(f->hosts);
	free(f);
}

void fleet_close(struct fleet *f, bool empty)
{
	struct leave_call *c;

	if (!f)
		return;
	if (f->beat)
		ledgerq_cancel(f->lq, f->beat);
	if (f->takeover)
		ledgerq_cancel(f->lq, f->takeover);
	uv_timer_stop(&f->timer);
	if (f->joined && !f->replaced && (c = calloc(1, sizeof(*c)))) {
		snprintf(c->host_id, sizeof(c->host_id), "%s", f->cfg->host_id);
		c->instance = f->instance;
		c->empty = empty;
		if (ledgerq_call(f->lq, leave_work, NULL, free, c, NULL) < 0)
			free(c);
	}
	uv_close((uv_handle_t *)&f->timer, fleet_closed_cb);
}
