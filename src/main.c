/* resend-dropd: command line, configuration, then hand over to the daemon's loop. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apikey.h"
#include "config.h"
#include "control_client.h"
#include "control_path.h"
#include "daemon.h"
#include "history.h"
#include "ledger.h"
#include "ledger_config.h"
#include "log.h"
#include "text.h"

/* This build's: /etc/... for the package, /usr/local/etc/... for a plain cmake --install. */
#ifndef RDD_DEFAULT_CONFIG
#define RDD_DEFAULT_CONFIG "/etc/resend-dropd/resend-dropd.yaml"
#endif
#define DEFAULT_CONFIG RDD_DEFAULT_CONFIG

/* Prints every configuration error, then how many there were; frees them. Exit status 1. */
static int config_errors_print(struct config_errors *errs, const char *config_path)
{
	for (size_t i = 0; i < errs->count; i++)
		fprintf(stderr, "%s\n", errs->items[i]);
	fprintf(stderr, "resend-dropd: %zu error%s in configuration %s\n", errs->count,
		errs->count == 1 ? "" : "s", config_path);
	config_errors_clear(errs);
	return 1;
}

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: resend-dropd [-c FILE] [--check | --once | --dry-run]\n"
		"       resend-dropd [-c FILE] [--socket PATH] status | reload |\n"
		"                    retry FOLDER FILE | pause [FOLDER] | resume [FOLDER]\n"
		"       resend-dropd [-c FILE] history [--folder F] [--since DURATION] [--failed]\n"
		"                    [--json] [--limit N]\n"
		"       resend-dropd --version | --help\n"
		"\n"
		"Watches drop folders and imports each finished CSV file into Resend\n"
		"(POST /contacts/imports), then moves it to its folder's done or failed directory.\n"
		"\n"
		"  -c, --config FILE  configuration (default " DEFAULT_CONFIG ")\n"
		"      --check        validate the configuration, print every error, exit 0 or 1\n"
		"      --once         process what is in the inboxes now, then exit\n"
		"      --dry-run      check and log what would be sent; upload and move nothing\n"
		"      --socket PATH  the running daemon's control socket (default: control.socket\n"
		"                     of the configuration, else the service's\n"
		"                     " CONFIG_CONTROL_SOCKET_DEFAULT ", else\n"
		"                     control.sock in state_dir, where a daemon run by hand\n"
		"                     listens)\n"

		"  -V, --version      print the version and exit\n"
		"  -h, --help         print this help and exit\n"		"\n"
		"Commands, to the running daemon:\n"
		"  status             what each folder is doing\n"
		"  reload             load the configuration again; returns once it is in force,\n"
		"                     or exits 1 with every reason it was refused\n"
		"  retry FOLDER FILE  put FILE from FOLDER's failed directory back into its inbox\n"
		"  pause [FOLDER]     take no new files and start no uploads (every folder by default)\n"
		"  resume [FOLDER]    undo pause\n"
		"\n"
		"From the ledger in state_dir (the daemon need not run):\n"
		"  history            what became of each file, newest first: --folder F,\n"
		"                     --since DURATION (7d, 12h, 90m; claimed since then), --failed,\n"
		"                     --json (one object per line), --limit N (default 100 without\n"
		"                     --since; 0: all)\n"
		"\n"
		"Exit status: 0 success; 1 configuration or usage error; 2 runtime failure;\n"
		"3 with --once when any file failed. Commands: 0 done; 1 usage error, or refused\n"
		"(unknown folder or file); 2 the daemon is not running or cannot be reached\n"
		"(history: the ledger cannot be read).\n"
		"The API key is never in the YAML: it comes from api.api_key_env or\n"
		"api.api_key_file when one is set; else from RESEND_API_KEY, else from the systemd\n"
		"credential 'api_key', else from " APIKEY_DEFAULT_FILE ".\n");
}

/* One line, whatever the paths contain: scripts read it. */
static void print_summary(const struct config *cfg)
{
	char buf[PATH_MAX * 4];

	text_escape(buf, sizeof(buf), cfg->path);
	printf("%s: configuration OK: %zu folder%s:", buf, cfg->n_folders,
	       cfg->n_folders == 1 ? "" : "s");
	for (size_t i = 0; i < cfg->n_folders; i++) {
		text_escape(buf, sizeof(buf), cfg->folders[i].inbox);
		printf("%s %s (inbox %s)", i ? "," : "", cfg->folders[i].name, buf);
	}
	printf("\n");
}

/* A command to the running daemon: at --socket, else where control_path.h says for the
 * configuration (the default one's; the service's place when it cannot be read). */
static int main_ctl(const char *config_path, bool config_given, const char *socket_path,
		    int argc, char **argv)
{
	char places[CONTROL_PATH_MAX_CANDIDATES][CONTROL_PATH_MAX * 8];
	struct control_target t = {.reload_timeout_s = 30 + 60};
	struct config *cfg = NULL;
	struct config_errors errs = {0};
	int r;

	if (socket_path) {
		t.sockets[t.n_sockets++] = socket_path;
		return control_client_run(&t, argc, argv);
	}
	bool reload = strcmp(argv[0], "reload") == 0;

	/* A configuration with errors still says where the daemon is: its answer to `reload`
	 * says what is wrong. */
	if (config_load(config_path,
			CONFIG_LOAD_NO_API_KEY | CONFIG_LOAD_DIRS_LATER |
				(reload ? CONFIG_LOAD_KEEP_ON_ERROR : 0),
			&cfg, &errs) < 0 &&
	    !cfg) {
		if (config_given)
			return config_errors_print(&errs, config_path);
		config_errors_clear(&errs);
	}
	t.n_sockets = control_path_candidates(cfg, places);
	for (size_t i = 0; i < t.n_sockets; i++)
		t.sockets[i] = places[i];
	t.cfg = cfg;
	if (cfg)
		t.reload_timeout_s = (long)cfg->api.shutdown_timeout_s + 60;
	r = control_client_run(&t, argc, argv);
	if (errs.count && r == CTL_EXIT_UNREACHABLE)
		r = config_errors_print(&errs, config_path);
	config_errors_clear(&errs);
	config_free(cfg);
	return r;
}

#define HISTORY_USAGE                                                                           \
	"Usage: resend-dropd [-c FILE] history [--folder F] [--since DURATION] [--failed] "       \
	"[--json] [--limit N]\n"

/* Why a --folder is refused: the folder names the configuration has. */
static int history_unknown_folder(const struct config *cfg, const char *name)
{
	char q[256], path[PATH_MAX * 4];

	text_escape(q, sizeof(q), name);
	text_escape(path, sizeof(path), cfg->path);
	fprintf(stderr, "resend-dropd: history: no folder '%s' in %s; the folders are:", q, path);
	for (size_t i = 0; i < cfg->n_folders; i++)
		fprintf(stderr, "%s %s", i ? "," : "", cfg->folders[i].name);
	fprintf(stderr, "\n");
	return 1;
}

/* `history`: ARGV[0] is "history". Reads the ledger only, so it works whether the daemon runs
 * or not (SQLite's WAL readers do not block its writer). 0, 1 usage or configuration, 2 the
 * ledger cannot be read. */
static int main_history(const char *config_path, int argc, char **argv)
{
	static const struct option options[] = {
		{"config", required_argument, NULL, 'c'}, /* here too, as `status -c FILE` works */
		{"folder", required_argument, NULL, 'f'},
		{"since", required_argument, NULL, 's'},
		{"failed", no_argument, NULL, 'F'},
		{"json", no_argument, NULL, 'j'},
		{"limit", required_argument, NULL, 'l'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	struct history_options o = {0};
	struct config *cfg = NULL;
	struct config_errors errs = {0};
	struct ledger *l = NULL;
	const char *since = NULL;
	bool limit_given = false;
	uint64_t since_s = 0;
	char err[1024], *end;
	int opt, r;

	optind = 0;
	while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			break;
		case 'f':
			o.query.folder = optarg;
			break;
		case 's':
			since = optarg;
			break;
		case 'F':
			o.query.failed_only = true;
			break;
		case 'j':
			o.json = true;
			break;
		case 'l':
			errno = 0;
			unsigned long long n = strtoull(optarg, &end, 10);
			if (optarg[0] < '0' || optarg[0] > '9' || *end || errno || n > INT32_MAX) {
				fprintf(stderr, "resend-dropd: history: --limit: expected a number of "
						"rows (0: all), got '%s'\n", optarg);
				return 1;
			}
			o.query.limit = (size_t)n;
			limit_given = true;
			break;
		case 'h':
			printf(HISTORY_USAGE);
			return 0;
		default:
			fprintf(stderr, HISTORY_USAGE);
			return 1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "resend-dropd: history: unexpected argument '%s'\n", argv[optind]);
		fprintf(stderr, HISTORY_USAGE);
		return 1;
	}
	if (since && config_parse_duration(since, &since_s) < 0) {
		fprintf(stderr, "resend-dropd: history: --since: expected %s, got '%s'\n",
			CONFIG_DURATION_EXPECTED, since);
		return 1;
	}
	if (since_s > 0) {
		struct timespec ts;
		int64_t now_ms;

		clock_gettime(CLOCK_REALTIME, &ts);
		now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
		o.since_text = since;
		/* Compared before multiplied, which cannot wrap then; further back than the
		 * epoch is everything. */
		if (since_s < (uint64_t)(now_ms / 1000))
			o.query.since_ms = now_ms - (int64_t)since_s * 1000;
	}
	/* The most recent screenful unless a period or a number was asked for. */
	if (!limit_given && !since)
		o.query.limit = HISTORY_DEFAULT_LIMIT;

	if (config_load(config_path, CONFIG_LOAD_NO_API_KEY | CONFIG_LOAD_DIRS_LATER, &cfg, &errs) <
	    0)
		return config_errors_print(&errs, config_path);
	if (o.query.folder) {
		size_t i = 0;
		while (i < cfg->n_folders && strcmp(cfg->folders[i].name, o.query.folder) != 0)
			i++;
		if (i == cfg->n_folders) {
			r = history_unknown_folder(cfg, o.query.folder);
			config_free(cfg);
			return r;
		}
	}
	r = ledger_open_config(cfg, true, &l, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "resend-dropd: history: %s\n", err);
		config_free(cfg);
		return 2;
	}
	r = history_print(l, &o, stdout, stderr);
	if (r < 0)
		fprintf(stderr, "resend-dropd: history: %s\n", l->error);
	else if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "resend-dropd: history: cannot write: %s\n", strerror(errno));
		r = -EIO;
	}
	ledger_close(l);
	config_free(cfg);
	return r == 0 ? 0 : 2;
}

/* Where the command word is: the first argument that is neither an option nor an option's
 * value, as getopt sees them (ARGC when there is none). history has options of its own, so
 * the daemon's options must stop there. */
static int main_command_index(int argc, char **argv, const struct option *options)
{
	int i;

	optind = 0;
	opterr = 0;
	while (getopt_long(argc, argv, "+c:Vh", options, NULL) != -1)
		;
	i = optind;
	optind = 0;
	opterr = 1;
	return i;
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{"config", required_argument, NULL, 'c'},
		{"check", no_argument, NULL, 'k'},
		{"once", no_argument, NULL, 'o'},
		{"dry-run", no_argument, NULL, 'n'},
		{"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},
		{"socket", required_argument, NULL, 's'},
		{0},
	};
	const char *config_path = DEFAULT_CONFIG, *socket_path = NULL;
	bool check = false, config_given = false;
	unsigned flags = 0;
	struct config *cfg = NULL;
	struct config_errors errs = {0};
	int opt, cmd = main_command_index(argc, argv, options);
	bool history = cmd < argc && strcmp(argv[cmd], "history") == 0;

	while ((opt = getopt_long(history ? cmd : argc, argv, "c:Vh", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			config_given = true;
			break;
		case 's':
			socket_path = optarg;
			break;
		case 'k':
			check = true;
			break;
		case 'o':
			flags |= DAEMON_ONCE;
			break;
		case 'n':
			flags |= DAEMON_DRY_RUN;
			break;
		case 'V':
			printf("resend-dropd %s\n", RDD_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (history) {
		if (check || flags || socket_path) {
			fprintf(stderr, "resend-dropd: 'history' takes none of --check, --once, "
					"--dry-run, --socket\n");
			return 1;
		}
		return main_history(config_path, argc - cmd, argv + cmd);
	}
	if (optind < argc && control_client_is_command(argv[optind])) {
		if (check || flags) {
			fprintf(stderr, "resend-dropd: '%s' takes none of --check, --once, --dry-run\n",
				argv[optind]);
			return 1;
		}
		return main_ctl(config_path, config_given, socket_path, argc - optind, argv + optind);
	}
	if (socket_path) {
		fprintf(stderr, "resend-dropd: --socket goes with a command (status, reload, retry, pause, "
				"resume)\n");
		return 1;
	}
	if (optind < argc) {
		fprintf(stderr, "resend-dropd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 1;
	}
	if (check && flags) {
		fprintf(stderr, "resend-dropd: --check cannot be combined with --once or --dry-run\n");
		return 1;
	}

	log_init();
	if (config_load(config_path, check ? 0 : CONFIG_LOAD_DIRS_LATER, &cfg, &errs) < 0)
		return config_errors_print(&errs, config_path);
	if (check) {
		print_summary(cfg);
		config_free(cfg);
		return 0;
	}
	log_configure((enum log_level)cfg->log_level, (enum log_format)cfg->log_format);
	/* The daemon owns cfg from here, so that a reload can replace it. */
	return daemon_run(cfg, config_path, flags);
}
