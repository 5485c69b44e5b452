#include "pg_fixture.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char pg_parent[64], pg_dir[96];
static unsigned pg_databases;

/* tests/pg_server COMMAND on the fixture's directory. */
static int pg_server(const char *command)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "'%s' %s '%s' %ld >/dev/null", RDD_PG_SERVER, command, pg_dir,
		 (long)getpid());
	return system(cmd) == 0 ? 0 : -1;
}

int pg_fixture_start(void)
{
	strcpy(pg_parent, "/tmp/rdd-pgt-XXXXXX");
	if (!mkdtemp(pg_parent) || chmod(pg_parent, 0755) < 0) {
		perror("pg_fixture: mkdtemp");
		return -1;
	}
	snprintf(pg_dir, sizeof(pg_dir), "%s/srv", pg_parent);
	if (pg_server("start") < 0) {
		fprintf(stderr, "pg_fixture: tests/pg_server start failed\n");
		rmdir(pg_parent);
		return -1;
	}
	return 0;
}

void pg_fixture_stop(void)
{
	if (!pg_dir[0])
		return;
	(void)pg_server("stop");
	rmdir(pg_parent);
	pg_dir[0] = '\0';
}

const char *pg_fixture_host(void)
{
	return pg_dir;
}

int pg_fixture_sql(const char *conninfo, const char *sql, char *out, size_t outsz)
{
	PGconn *c = PQconnectdb(conninfo);
	PGresult *res;
	int r = -1;

	if (out && outsz)
		out[0] = '\0';
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "pg_fixture: %s: %s", conninfo, PQerrorMessage(c));
		PQfinish(c);
		return -1;
	}
	res = PQexec(c, sql);
	if (PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK) {
		r = 0;
		if (out && outsz && PQntuples(res) > 0 && PQnfields(res) > 0)
			snprintf(out, outsz, "%s", PQgetvalue(res, 0, 0));
	} else {
		fprintf(stderr, "pg_fixture: %s: %s", sql, PQresultErrorMessage(res));
	}
	PQclear(res);
	PQfinish(c);
	return r;
}

int pg_fixture_new_database(char *buf, size_t size)
{
	char admin[256], sql[64];

	snprintf(admin, sizeof(admin), "host=%s user=postgres dbname=postgres", pg_dir);
	snprintf(sql, sizeof(sql), "CREATE DATABASE t%u", ++pg_databases);
	if (pg_fixture_sql(admin, sql, NULL, 0) < 0)
		return -1;
	snprintf(buf, size, "host=%s user=postgres dbname=t%u", pg_dir, pg_databases);
	return 0;
}

int pg_fixture_halt(void)
{
	return pg_server("halt");
}

int pg_fixture_resume(void)
{
	return pg_server("resume");
}
