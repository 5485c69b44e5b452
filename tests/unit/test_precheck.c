/* precheck: the check of a claimed file before any quota is spent. What passes is open and
 * hashed right; what is refused says why, and leaves no descriptor behind. The sha256 is
 * computed here independently with OpenSSL's EVP. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "precheck.h"

/* pread is replaced for the whole test program, to count what the check reads, and to let a
 * writer append to the file (pread_grow_fd, once) while it is being hashed. */
static uint64_t pread_bytes;
static int pread_grow_fd = -1;

ssize_t pread(int fd, void *buf, size_t count, off_t offset)
{
	ssize_t n = (ssize_t)syscall(SYS_pread64, fd, buf, count, offset);

	if (pread_grow_fd >= 0) {
		static const char more[] = "late@example.com,Late\n";

		assert_int_equal(write(pread_grow_fd, more, strlen(more)), (ssize_t)strlen(more));
		pread_grow_fd = -1;
	}

	if (n > 0)
		pread_bytes += (uint64_t)n;
	return n;
}

struct fixture {
	char dir[64];
	int dir_fd;
	struct config_folder folder;
	int fds_before;
};

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	strcpy(fx->dir, "/tmp/rdd-precheck-XXXXXX");
	if (!mkdtemp(fx->dir))
		return -1;
	fx->dir_fd = open(fx->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fx->dir_fd < 0)
		return -1;
	fx->folder.name = "news";
	fx->folder.settings.max_file_bytes = 10u * 1024 * 1024;
	fx->folder.settings.max_upload_bytes = 50u * 1024 * 1024;
	fx->folder.column_map.present = true;
	fx->folder.column_map.email = "Email";
	fx->folder.column_map.first_name = "First Name";
	fx->fds_before = count_fds();
	*state = fx;
	return 0;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	int r;

	/* Every refusal closed what it opened; every pass was closed by the test. */
	r = count_fds() == fx->fds_before ? 0 : -1;
	close(fx->dir_fd);
	if (nftw(fx->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS) < 0)
		r = -1;
	free(fx);
	return r;
}

static void write_bytes(const struct fixture *fx, const char *name, const void *data, size_t len)
{
	int fd = openat(fx->dir_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static void write_text(const struct fixture *fx, const char *name, const char *text)
{
	write_bytes(fx, name, text, strlen(text));
}

static void sha256_hex(const void *data, size_t len, char hex[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	assert_true(EVP_Digest(data, len, md, &n, EVP_sha256(), NULL));
	assert_int_equal(n, 32);
	for (unsigned i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

/* Runs the check with everything in RET poisoned first, so that stale fields show. */
static int check(struct fixture *fx, const char *name, const atomic_bool *cancel,
		 struct precheck *ret)
{
	int r;

	memset(ret, 0x55, sizeof(*ret));
	ret->reason[sizeof(ret->reason) - 1] = '\0';
	ret->sha256[sizeof(ret->sha256) - 1] = '\0';
	/* Copies are made in the test's own directory, even when the files checked are the
	 * fixtures of the source tree. */
	int work_fd = open(fx->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	assert_true(work_fd >= 0);
	r = precheck_run(fx->dir_fd, name, &fx->folder, work_fd, NULL, cancel, ret);
	close(work_fd);
	/* What normalization found is tested in test_normalize (and below, once). */
	assert_true(r < 0 || ret->norm.read);
	normalize_clear(&ret->norm);
	return r;
}

static void assert_refused(const struct precheck *pc)
{
	assert_int_equal(pc->fd, -1);
	assert_true(pc->reason[0] != '\0');
}

static void test_good_csv_passes(void **state)
{
	struct fixture *fx = *state;
	const char *csv = "Email,First Name,Plan\nx@example.com,Ann,gold\ny@example.com,Bo,free\n";
	char want[65], buf[256];
	struct precheck pc;
	struct stat a, b;
	atomic_bool cancel = false;

	write_text(fx, "good.csv", csv);
	sha256_hex(csv, strlen(csv), want);
	assert_int_equal(check(fx, "good.csv", &cancel, &pc), 0);
	assert_string_equal(pc.sha256, want);
	assert_int_equal(pc.bytes, strlen(csv));
	assert_true(pc.fd >= 0);
	assert_true(fcntl(pc.fd, F_GETFD) & FD_CLOEXEC);
	/* The descriptor is on that file, and what it reads from the start is the content that
	 * was hashed: it is what will be uploaded. */
	assert_int_equal(fstat(pc.fd, &a), 0);
	assert_int_equal(fstatat(fx->dir_fd, "good.csv", &b, 0), 0);
	assert_int_equal(a.st_ino, b.st_ino);
	assert_int_equal(pread(pc.fd, buf, sizeof(buf), 0), (ssize_t)strlen(csv));
	assert_memory_equal(buf, csv, strlen(csv));
	assert_int_equal(lseek(pc.fd, 0, SEEK_CUR), 0);
	close(pc.fd);

	/* No cancel flag at all is fine too. */
	assert_int_equal(check(fx, "good.csv", NULL, &pc), 0);
	assert_string_equal(pc.sha256, want);
	close(pc.fd);
}

static void test_fixture_with_bom_and_crlf(void **state)
{
	struct fixture *fx = *state;
	const char *dir = getenv("RDD_FIXTURES");
	const char *names[] = {"lf.csv", "crlf.csv", "bom.csv"};
	char path[512], want[65];
	struct precheck pc;

	if (!dir)
		fail_msg("RDD_FIXTURES is not set");
	snprintf(path, sizeof(path), "%s/csv", dir);
	close(fx->dir_fd);
	fx->dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fx->dir_fd < 0)
		fail_msg("cannot open %s: %s", path, strerror(errno));
	fx->folder.column_map.first_name = NULL;
	for (size_t i = 0; i < 3; i++) {
		char buf[4096];
		int fd = openat(fx->dir_fd, names[i], O_RDONLY | O_CLOEXEC);
		ssize_t n;

		assert_true(fd >= 0);
		n = read(fd, buf, sizeof(buf));
		close(fd);
		assert_true(n > 0);
		sha256_hex(buf, (size_t)n, want);
		if (check(fx, names[i], NULL, &pc) != 0)
			fail_msg("%s: %s", names[i], pc.reason);
		assert_string_equal(pc.sha256, want);
		assert_int_equal(pc.bytes, n);
		close(pc.fd);
	}
}

/* A header without the mapped column is refused, saying which; the file was read, so its
 * report still gets the sha256 and size. */
static void test_header_lacks_mapped_column(void **state)
{
	struct fixture *fx = *state;
	const char *csv = "E-mail,First Name\nx@example.com,Ann\n";
	char want[65];
	struct precheck pc;
	int r;

	write_text(fx, "x.csv", csv);
	sha256_hex(csv, strlen(csv), want);
	r = check(fx, "x.csv", NULL, &pc);
	assert_true(r < 0);
	assert_refused(&pc);
	assert_non_null(strstr(pc.reason, "'Email'"));
	assert_non_null(strstr(pc.reason, "column_map.email"));
	assert_string_equal(pc.sha256, want);
	assert_int_equal(pc.bytes, strlen(csv));
}

static void test_empty_file_refused(void **state)
{
	struct fixture *fx = *state;
	struct precheck pc;
	atomic_bool cancel = false;

	write_text(fx, "empty.csv", "");
	assert_true(check(fx, "empty.csv", &cancel, &pc) < 0);
	assert_refused(&pc);
	assert_int_equal(pc.bytes, 0);
	/* sha256 of nothing */
	assert_string_equal(pc.sha256,
			    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_symlink_refused(void **state)
{
	struct fixture *fx = *state;
	struct precheck pc;

	write_text(fx, "real.csv", "Email,First Name\n");
	assert_int_equal(symlinkat("real.csv", fx->dir_fd, "x.csv"), 0);
	assert_int_equal(check(fx, "x.csv", NULL, &pc), -ELOOP);
	assert_refused(&pc);
	assert_string_equal(pc.reason, "is a symbolic link");
	assert_string_equal(pc.sha256, "");
}

static void test_fifo_refused(void **state)
{
	struct fixture *fx = *state;
	struct precheck pc;

	assert_int_equal(mkfifoat(fx->dir_fd, "x.csv", 0600), 0);
	alarm(10); /* waiting for a writer would hang: the alarm ends the program instead */
	assert_int_equal(check(fx, "x.csv", NULL, &pc), -EINVAL);
	alarm(0);
	assert_refused(&pc);
	assert_string_equal(pc.reason, "is a FIFO");
	assert_string_equal(pc.sha256, "");
}

static void test_hard_link_refused(void **state)
{
	struct fixture *fx = *state;
	struct precheck pc;

	write_text(fx, "x.csv", "Email,First Name\nx@example.com,Ann\n");
	assert_int_equal(linkat(fx->dir_fd, "x.csv", fx->dir_fd, "elsewhere", 0), 0);
	assert_int_equal(check(fx, "x.csv", NULL, &pc), -EMLINK);
	assert_refused(&pc);
	assert_string_equal(pc.reason, "has 2 hard links");
}

static void test_too_big_refused(void **state)
{
	struct fixture *fx = *state;
	struct precheck pc;
	const char *csv = "Email,First Name\nx@example.com,Ann\n"; /* 35 bytes */

	write_text(fx, "x.csv", csv);
	fx->folder.settings.max_file_bytes = strlen(csv) - 1;
	assert_int_equal(check(fx, "x.csv", NULL, &pc), -EFBIG);
	assert_refused(&pc);
	assert_string_equal(pc.reason, "is 35 bytes, over the limit of 34 bytes (max_file_bytes)");
	/* At the limit exactly it passes. */
	fx->folder.settings.max_file_bytes = strlen(csv);
	assert_int_equal(check(fx, "x.csv", NULL, &pc), 0);
	close(pc.fd);
}

static void test_missing_refused(void **state)
{
	struct fixture *fx = *state;
	struct precheck pc;

	assert_int_equal(check(fx, "gone.csv", NULL, &pc), -ENOENT);
	assert_refused(&pc);
}

/* Several read chunks, and a size that is not a multiple of one. */
static void test_big_file_hashes_right(void **state)
{
	struct fixture *fx = *state;
	size_t len = 3 * PRECHECK_READ_BYTES + 12345;
	char *data = malloc(len), want[65];
	struct precheck pc;
	size_t off;

	assert_non_null(data);
	off = (size_t)snprintf(data, len, "Email,First Name\n");
	for (size_t i = 0; off < len; i++) {
		int n = snprintf(data + off, len - off, "u%zu@example.com,N%zu\n", i, i);
		off += (size_t)n < len - off ? (size_t)n : len - off;
	}
	data[len - 1] = '\n';
	write_bytes(fx, "big.csv", data, len);
	sha256_hex(data, len, want);
	free(data);
	assert_int_equal(check(fx, "big.csv", NULL, &pc), 0);
	assert_string_equal(pc.sha256, want);
	assert_int_equal(pc.bytes, len);
	close(pc.fd);
}

/* The check reads the file once, header included (the upload is the only other read): a
 * 3 MB file costs 3 MB of reads, for a file that passes and for one refused for its header. */
static void test_file_read_once(void **state)
{
	struct fixture *fx = *state;
	size_t len = 17 + 41 * ((3 * PRECHECK_READ_BYTES + 777) / 41);
	char *data = malloc(len);
	struct precheck pc;

	assert_non_null(data);
	memset(data, 'x', len);
	memcpy(data, "Email,First Name\n", 17);
	/* Rows of 41 bytes, each with an address of its own: "u00000001@example.com,xxx...\n". */
	for (size_t i = 17, row = 0; i + 41 <= len; i += 41, row++) {
		char email[24];

		snprintf(email, sizeof(email), "u%08zu@example.com,", row);
		memcpy(data + i, email, 22);
		data[i + 40] = '\n';
	}
	write_bytes(fx, "once.csv", data, len);
	pread_bytes = 0;
	assert_int_equal(check(fx, "once.csv", NULL, &pc), 0);
	assert_int_equal(pread_bytes, len);
	close(pc.fd);

	memcpy(data, "Mail,First Name\n", 16);
	write_bytes(fx, "bad.csv", data, len);
	pread_bytes = 0;
	assert_true(check(fx, "bad.csv", NULL, &pc) < 0);
	assert_int_equal(pread_bytes, len);
	assert_non_null(strstr(pc.reason, "lacks column 'Email'"));
	assert_int_equal(strlen(pc.sha256), 64);
	free(data);
}

/* A shutdown stops the check early; nothing is refused (no reason), nothing stays open. */
static void test_cancel_before_call(void **state)
{
	struct fixture *fx = *state;
	struct precheck pc;
	atomic_bool cancel = true;

	write_text(fx, "x.csv", "Email,First Name\nx@example.com,Ann\n");
	assert_int_equal(check(fx, "x.csv", &cancel, &pc), -ECANCELED);
	assert_int_equal(pc.fd, -1);
	assert_string_equal(pc.reason, "");
	assert_string_equal(pc.sha256, "");
}

/* What was hashed is recorded from the descriptor: the later comparison (after the upload)
 * finds the same file unchanged, and says what changed otherwise. */
static void test_identity_recorded(void **state)
{
	struct fixture *fx = *state;
	const char *csv = "Email,First Name\nx@example.com,Ann\n";
	struct precheck pc;
	struct stat st, other;
	char what[160];
	int fd;

	write_text(fx, "x.csv", csv);
	assert_int_equal(check(fx, "x.csv", NULL, &pc), 0);
	assert_int_equal(fstat(pc.fd, &st), 0);
	assert_int_equal(pc.dev, st.st_dev);
	assert_int_equal(pc.ino, st.st_ino);
	assert_int_equal(pc.mtime.tv_sec, st.st_mtim.tv_sec);
	assert_int_equal(pc.mtime.tv_nsec, st.st_mtim.tv_nsec);
	assert_int_equal(pc.ctime.tv_sec, st.st_ctim.tv_sec);
	assert_int_equal(pc.ctime.tv_nsec, st.st_ctim.tv_nsec);
	assert_true(precheck_same_file(&pc, &st, what, sizeof(what)));

	/* Appended through its name: the descriptor shows it. */
	fd = openat(fx->dir_fd, "x.csv", O_WRONLY | O_APPEND | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "y@example.com,Bo\n", 17), 17);
	close(fd);
	assert_int_equal(fstat(pc.fd, &st), 0);
	assert_false(precheck_same_file(&pc, &st, what, sizeof(what)));
	assert_string_equal(what, "35 \u2192 52 bytes");

	/* Sizes as an operator reads them; what changed when the size did not. */
	other = st;
	pc.bytes = 17377790;
	other.st_size = 17390180;
	assert_false(precheck_same_file(&pc, &other, what, sizeof(what)));
	assert_string_equal(what, "17,377,790 \u2192 17,390,180 bytes");
	other.st_size = 17377790;
	other.st_mtim = pc.mtime;
	other.st_mtim.tv_nsec ^= 1;
	assert_false(precheck_same_file(&pc, &other, what, sizeof(what)));
	assert_string_equal(what,
			    "rewritten in place, 17,377,790 bytes as before (its mtime changed)");
	other.st_mtim = pc.mtime;
	other.st_ctim = pc.ctime;
	assert_true(precheck_same_file(&pc, &other, what, sizeof(what)));
	other.st_ctim.tv_sec++;
	assert_false(precheck_same_file(&pc, &other, what, sizeof(what)));
	assert_non_null(strstr(what, "its inode changed"));
	other.st_ctim = pc.ctime;
	other.st_ino = (ino_t)(pc.ino + 1);
	assert_false(precheck_same_file(&pc, &other, what, sizeof(what)));
	assert_non_null(strstr(what, "another file"));
	close(pc.fd);
}

/* Written to while it was being hashed: the sha256 is of no content the file held whole, so
 * it is refused before any upload, saying so. */
static void test_changed_while_hashed(void **state)
{
	struct fixture *fx = *state;
	const char *csv = "Email,First Name\nx@example.com,Ann\n";
	struct precheck pc;

	write_text(fx, "x.csv", csv);
	pread_grow_fd = openat(fx->dir_fd, "x.csv", O_WRONLY | O_APPEND | O_CLOEXEC);
	assert_true(pread_grow_fd >= 0);
	{
		int w = pread_grow_fd;

		assert_int_equal(check(fx, "x.csv", NULL, &pc), -ESTALE);
		pread_grow_fd = -1;
		close(w);
	}
	assert_refused(&pc);
	assert_string_equal(pc.reason, "the file changed while it was being checked: 35 \u2192 57 "
				       "bytes");
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_good_csv_passes),
		T(test_fixture_with_bom_and_crlf),
		T(test_header_lacks_mapped_column),
		T(test_empty_file_refused),
		T(test_symlink_refused),
		T(test_fifo_refused),
		T(test_hard_link_refused),
		T(test_too_big_refused),
		T(test_missing_refused),
		T(test_big_file_hashes_right),
		T(test_file_read_once),
		T(test_cancel_before_call),
		T(test_identity_recorded),
		T(test_changed_while_hashed),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
