#ifndef RDD_LEDGER_CONFIG_H
#define RDD_LEDGER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "ledger.h"

struct config;

/* The ledger CFG names (ledger.backend: SQLite in state_dir, or PostgreSQL), opened as
 * ledger_open_backend opens it. */
int ledger_open_config(const struct config *cfg, bool read_only, struct ledger **ret,
		       char *errbuf, size_t errsz);

#endif
