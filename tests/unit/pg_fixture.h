/* A real PostgreSQL server for the unit tests of the ledger's PostgreSQL backend: started once
 * per test program by tests/pg_server (initdb and pg_ctl in a temporary directory, a unix socket
 * there), stopped at the end, and stopped by the script's watchdog if the program dies. Each
 * test takes a database of its own. */
#ifndef RDD_PG_FIXTURE_H
#define RDD_PG_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>

/* Starts the server: 0, or -1 having said why on stderr. */
int pg_fixture_start(void);
/* Stops it and removes its directory. */
void pg_fixture_stop(void);
/* The socket directory ("host=" of a connection string). */
const char *pg_fixture_host(void);
/* Makes a new, empty database and writes the connection string for it (user postgres) into
 * BUF: 0, or -1 having said why. */
int pg_fixture_new_database(char *buf, size_t size);
/* Runs SQL as the superuser in the database of CONNINFO; the first column of the first row
 * (or "") into OUT. 0, or -1 with the server's error on stderr. */
int pg_fixture_sql(const char *conninfo, const char *sql, char *out, size_t outsz);
/* The server stopped (its data kept), and started again. 0, or -1. */
int pg_fixture_halt(void);
int pg_fixture_resume(void);

#endif
