/* This daemon as one host of a fleet: several daemons, one per host, serving the same folders
 * through the PostgreSQL ledger. It joins (its row in the hosts table), renews its lease with a
 * heartbeat, claims each inbox file in the database before the rename into its own processing
 * directory (fsops_host_dir), takes over the files of a host whose lease ended, divides the
 * team's rate limit between the hosts alive and passes a long rate-limit pause to all of them.
 * Every database call goes through the ledger's thread (ledgerq_call); the loop never waits on
 * one: a claim is answered by a callback, a heartbeat is one call at a time. */
#ifndef RDD_FLEET_H
#define RDD_FLEET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "ledger.h"

struct fleet;
struct ledgerq;

struct fleet_events {
	/* Joined, or left: claims may start (fleet_can_claim), or must wait. */
	void (*ready)(bool ready, void *data);
	/* HOST's lease ended and it is this host's to take over: its files are moved into this
	 * host's processing directories, then fleet_took_over says how that went. */
	void (*take_over)(const char *host, void *data);
	/* The hosts alive changed (ALIVE >= 1: the team's limit is divided by it; this host is
	 * the INDEX-th of them, and takes its requests in its turns on the clock they share, the
	 * monotonic clock plus OFFSET_MS), or a host was told to wait PAUSE_MS before its next
	 * request (a 429): every host waits. */
	void (*share)(unsigned alive, unsigned index, int64_t offset_ms, void *data);
	void (*pause)(uint64_t pause_ms, bool news, void *data); /* NEWS: not told before */
	/* This run's row was taken over while it could not reach the database, or another daemon
	 * has its host_id: it must stop (BY says who). */
	void (*replaced)(const char *by, void *data);
	/* What the heartbeat says this host holds, and a rate-limit pause it was told to keep
	 * (ms from now, 0: none), to share. */
	unsigned (*in_flight)(void *data);
	uint64_t (*own_pause_ms)(void *data);
	void *data;
};

/* CFG (a fleet's settings, host_id set) and LQ outlive the fleet. The first heartbeat (the
 * join) goes at once. -ENOMEM. */
int fleet_new(uv_loop_t *loop, const struct config_fleet *cfg, struct ledgerq *lq,
	      const struct fleet_events *ev, struct fleet **ret);
/* Whether a file may be claimed now: joined, and the lease renewed within its length. */
bool fleet_can_claim(const struct fleet *f);
const char *fleet_host_id(const struct fleet *f);

/* Claims FOLDER/FILE in the database: CB(MINE, DATA) on the loop, MINE false when another
 * host has it. *RET for fleet_cancel until CB. -ENOMEM. */
int fleet_claim(struct fleet *f, const char *folder, const char *file,
		void (*cb)(bool mine, void *data), void *data, void **ret);
void fleet_cancel(struct fleet *f, void *claim);
/* The claim of FOLDER/FILE is over (the file is in this host's processing directory, or could
 * not be moved there). */
void fleet_release(struct fleet *f, const char *folder, const char *file);
/* HOST's files were moved (LEFT of them could not be: a name taken here, an error): with none
 * left, its row and claims go; otherwise the next heartbeat tries again. */
void fleet_took_over(struct fleet *f, const char *host, unsigned moved, unsigned left);

/* The fleet as the last heartbeat saw it (for status): its hosts, and how long ago that was
 * (ms; -1: never). */
const struct ledger_host *fleet_hosts(const struct fleet *f, size_t *ret_n);
int64_t fleet_last_beat_ago_ms(const struct fleet *f);

/* A clean stop: the heartbeat ends and the row goes (EMPTY: nothing left in processing) or
 * stays "stopped" for another host to take the files over when its lease ends. Then frees F
 * once its timer is closed. */
void fleet_close(struct fleet *f, bool empty);

#endif
