/* The ledger a configuration names: SQLite in state_dir, or PostgreSQL at libpq's connection
 * string with the password file beside it. What the daemon and `history` open. */
#include "ledger_config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "config.h"

int ledger_open_config(const struct config *cfg, bool read_only, struct ledger **ret,
		       char *errbuf, size_t errsz)
{
	char *where;
	int r;

	if (cfg->ledger.backend == CONFIG_LEDGER_SQLITE)
		return ledger_open_backend(ledger_backend_sqlite.name, cfg->state_dir, read_only,
					   ret, errbuf, errsz);
	r = ledger_pg_conninfo(cfg->ledger.conninfo, cfg->ledger.password_file, &where);
	if (r < 0) {
		snprintf(errbuf, errsz, "ledger.conninfo: %s",
			 r == -ENOMEM ? "out of memory" : "not a PostgreSQL connection string");
		return r;
	}
	r = ledger_open_backend(ledger_backend_postgresql.name, where, read_only, ret, errbuf,
				errsz);
	free(where);
	return r;
}
