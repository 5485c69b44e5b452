/* resend-dropd: command line, configuration, then hand over to the daemon's loop. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "daemon.h"
#include "log.h"

#define DEFAULT_CONFIG "/etc/resend-dropd/resend-dropd.yaml"

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: resend-dropd [-c FILE] [--check | --once | --dry-run]\n"
		"       resend-dropd --version | --help\n"
		"\n"
		"Watches drop folders and imports each finished CSV file into Resend\n"
		"(POST /contacts/imports), then moves it to its folder's done or failed directory.\n"
		"\n"
		"  -c, --config FILE  configuration (default " DEFAULT_CONFIG ")\n"
		"      --check        validate the configuration, print every error, exit 0 or 1\n"
		"      --once         process what is in the inboxes now, then exit\n"
		"      --dry-run      check and log what would be sent; upload and move nothing\n"
		"  -V, --version      print the version and exit\n"
		"  -h, --help         print this help and exit\n"
		"\n"
		"Exit status: 0 success; 1 configuration or usage error; 2 runtime failure;\n"
		"3 with --once when any file failed.\n"
		"The API key comes from the environment variable named by api.api_key_env\n"
		"(default RESEND_API_KEY) or from api.api_key_file; never from the YAML.\n");
}

/* One line, whatever the paths contain: scripts read it. */
static void print_summary(const struct config *cfg)
{
	char buf[PATH_MAX * 4];

	log_escape(buf, sizeof(buf), cfg->path);
	printf("%s: configuration OK: %zu folder%s:", buf, cfg->n_folders,
	       cfg->n_folders == 1 ? "" : "s");
	for (size_t i = 0; i < cfg->n_folders; i++) {
		log_escape(buf, sizeof(buf), cfg->folders[i].inbox);
		printf("%s %s (inbox %s)", i ? "," : "", cfg->folders[i].name, buf);
	}
	printf("\n");
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
		{0},
	};
	const char *config_path = DEFAULT_CONFIG;
	bool check = false;
	unsigned flags = 0;
	struct config *cfg = NULL;
	struct config_errors errs = {0};
	int opt;

	while ((opt = getopt_long(argc, argv, "c:Vh", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
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
	if (config_load(config_path, 0, &cfg, &errs) < 0) {
		for (size_t i = 0; i < errs.count; i++)
			fprintf(stderr, "%s\n", errs.items[i]);
		fprintf(stderr, "resend-dropd: %zu error%s in configuration %s\n", errs.count,
			errs.count == 1 ? "" : "s", config_path);
		config_errors_clear(&errs);
		return 1;
	}
	if (check) {
		print_summary(cfg);
		config_free(cfg);
		return 0;
	}
	log_configure((enum log_level)cfg->log_level, (enum log_format)cfg->log_format);
	/* The daemon owns cfg from here, so that a reload can replace it. */
	return daemon_run(cfg, config_path, flags);
}
