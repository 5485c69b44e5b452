/* A YAML file read against tables of fields, with every problem collected (position and key
 * path) before the caller gives up, so that a file is fixed in one go. Knows nothing of any
 * one program's schema: the caller's tables say which keys a mapping has, their types and
 * ranges, where each value goes, and what else to check. Pure (libyaml).
 *
 * Errors read "file:line:column: key.path: message" (without the path at the top level, and
 * "file: message" for the file as a whole), and come out sorted by position, then in the
 * order they were found; beyond the limit's count they are dropped, and a last line says so.
 * A value is quoted in a message with YAMLCONF_QUOTED, which escapes control characters, so
 * that each error stays one line.
 *
 * Nodes are libyaml's (yaml.h); a node pointer stays valid until yamlconf_free(). */
#ifndef RDD_YAMLCONF_H
#define RDD_YAMLCONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

struct yamlconf;

/* What one file may cost, and what it is called in the messages about it. Deep nesting and
 * many anchors make libyaml's loader quadratic; a configuration needs neither. */
struct yamlconf_limits {
	size_t max_bytes;  /* the file's size */
	int max_depth;     /* mappings and lists within each other */
	int max_anchors;   /* in the whole file */
	size_t max_errors; /* kept; then "too many errors, stopped after N" */
	const char *noun;  /* "cannot open NOUN: ...", "NOUN is N bytes, over the limit ..." */
	const char *kind;  /* "nested more than N levels deep: not KIND" */
};

/* Reads FILE whole (a regular file within limits->max_bytes; a FIFO is refused without
 * blocking) and returns 0 and *ret, or -ENOMEM (and nothing), or the negative errno that made
 * the file unreadable (-EINVAL: not a regular file, -EFBIG: too big or growing) with *ret
 * holding that one error. FILE and LIMITS are copied. */
int yamlconf_open(const char *file, const struct yamlconf_limits *limits, struct yamlconf **ret);
/* Parses the file's first document: 0 and *ret_root (NULL: the file holds no document, only
 * comments or nothing); -EINVAL when the text is not UTF-8 YAML within the limits (said where);
 * -ENOMEM. */
int yamlconf_load(struct yamlconf *yc, const yaml_node_t **ret_root);
/* After the first document has been read: refuses a second one (it would be ignored silently)
 * and a syntax error after the first. */
void yamlconf_expect_end(struct yamlconf *yc);
/* How many errors have been said since the last flush, kept or not (beyond the limit, or out
 * of memory): none means the file is good so far. */
size_t yamlconf_error_count(const struct yamlconf *yc);
/* Moves every error, in order, to the end of the caller's list *ITEMS (realloc'd, *COUNT
 * long), each a malloc'd string; then the list is the caller's, and yc has none. */
void yamlconf_flush_errors(struct yamlconf *yc, char ***items, size_t *count);
/* Drops the document, the file and any error not flushed. NULL is fine. */
void yamlconf_free(struct yamlconf *yc);

/* ---- errors ---------------------------------------------------------------------------- */

/* At LINE:COLUMN (1-based; LINE 0: the file as a whole), under PATH (NULL or "": none). */
void yamlconf_error_at(struct yamlconf *yc, size_t line, size_t column, const char *path,
		       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* At where node N starts. */
void yamlconf_error(struct yamlconf *yc, const yaml_node_t *n, const char *path, const char *fmt,
		    ...) __attribute__((format(printf, 4, 5)));
/* "missing required key 'KEY'", or "missing required key 'KEY': HINT", at the mapping MAP. */
void yamlconf_missing(struct yamlconf *yc, const yaml_node_t *map, const char *path,
		      const char *key, const char *hint);

/* S as a message shows it: control characters as \xNN, cut with "..." to fit BUF. */
void yamlconf_quote(char *buf, size_t size, const char *s);
#define YAMLCONF_QUOTED(buf, s) (yamlconf_quote((buf), sizeof(buf), (s)), (buf))

/* ---- nodes ----------------------------------------------------------------------------- */

/* "a scalar", "an empty value", "a list", "a mapping": what a message says was found. */
const char *yamlconf_type_name(const yaml_node_t *n);
const char *yamlconf_scalar(const yaml_node_t *n);
/* A plain `key:` with nothing after it (what yamlconf_type_name calls "an empty value"). */
bool yamlconf_is_empty(const yaml_node_t *n);
/* The same, or a plain ~ or null: "not set". */
bool yamlconf_is_null(const yaml_node_t *n);
/* A scalar holding a NUL, which a C string would cut short. */
bool yamlconf_has_nul(const yaml_node_t *n);
/* The number of items of a list or pairs of a mapping; 0 for a scalar. */
size_t yamlconf_count(const yaml_node_t *n);
/* Item I of the list N, key and value of pair I of the mapping N (I < yamlconf_count(N)). */
const yaml_node_t *yamlconf_item(struct yamlconf *yc, const yaml_node_t *n, size_t i);
const yaml_node_t *yamlconf_pair_key(struct yamlconf *yc, const yaml_node_t *n, size_t i);
const yaml_node_t *yamlconf_pair_value(struct yamlconf *yc, const yaml_node_t *n, size_t i);
/* Whether N is of TYPE; if not, says "expected WHAT, got ..." (WHAT: "a mapping", "a list of
 * folders"). */
bool yamlconf_expect(struct yamlconf *yc, const yaml_node_t *n, const char *path,
		     yaml_node_type_t type, const char *what);

/* ---- typed getters: each says what is wrong with a bad value and returns false, leaving
 * *ret as it was --------------------------------------------------------------------------- */

/* Flags of getters and fields. */
enum yamlconf_flags {
	YAMLCONF_EMPTY_OK = 1 << 0, /* a string may be "" */
	YAMLCONF_NULL_OK = 1 << 1,  /* field: a null value (yamlconf_is_null) leaves it as it is */
	YAMLCONF_ICASE = 1 << 2,    /* an enum's names and aliases match in any ASCII case */
	/* field: "missing required key" when it is absent */
	YAMLCONF_REQUIRED = 1 << 3,
	/* field: the same, said only when nothing else in its mapping was wrong (a misspelt key
	 * is then one error, not two), and so for the first such key only */
	YAMLCONF_REQUIRED_QUIET = 1 << 4,
};

/* A string without NUL characters, non-empty unless YAMLCONF_EMPTY_OK; *ret (malloc'd) is
 * freed and replaced. */
bool yamlconf_get_string(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			 unsigned flags, char **ret);
/* true or false, unquoted, in any case. */
bool yamlconf_get_bool(struct yamlconf *yc, const yaml_node_t *n, const char *path, bool *ret);
/* Unquoted decimal digits, within [MIN, MAX]. */
bool yamlconf_get_uint(struct yamlconf *yc, const yaml_node_t *n, const char *path, uint64_t min,
		       uint64_t max, uint64_t *ret);
/* An unquoted finite decimal number (digits first, or a point), within [MIN, MAX]. */
bool yamlconf_get_double(struct yamlconf *yc, const yaml_node_t *n, const char *path, double min,
			 double max, double *ret);

struct yamlconf_alias {
	const char *name;
	int value;
};
/* One of NAMES (NULL-terminated), as its index, or of ALIASES (may be NULL; {NULL} ends it),
 * as its value; matched exactly, or in any case with YAMLCONF_ICASE. A message lists NAMES
 * only. */
bool yamlconf_get_enum(struct yamlconf *yc, const yaml_node_t *n, const char *path,
		       const char *const *names, const struct yamlconf_alias *aliases,
		       unsigned flags, int *ret);

/* ITEM fills ITEMS[COUNT] from the list item N at PATH ("list[3]"), given the COUNT items kept
 * before it, and returns whether to keep it (false: it said why). */
typedef bool (*yamlconf_item_fn)(struct yamlconf *yc, const yaml_node_t *n, const char *path,
				 void *items, size_t count);
/* A list (else "expected WHAT, got ..."): *ret_items is a calloc'd array of room for each item
 * (SIZE bytes apiece) and *ret_count the number ITEM kept. Returns false, and writes nothing,
 * when N is no list or memory ran out (said too). */
bool yamlconf_get_list(struct yamlconf *yc, const yaml_node_t *n, const char *path,
		       const char *what, size_t size, yamlconf_item_fn item, void **ret_items,
		       size_t *ret_count);

/* ---- tables of fields ------------------------------------------------------------------ */

enum yamlconf_type {
	YAMLCONF_STRING,  /* char *: yamlconf_get_string */
	YAMLCONF_BOOL,    /* bool */
	YAMLCONF_UINT,    /* uint64_t within [min, max] */
	YAMLCONF_DOUBLE,  /* double within [dmin, dmax] */
	YAMLCONF_ENUM,    /* an int-sized enum: names, aliases */
	YAMLCONF_MAPPING, /* walked with the table `fields`, the value its target; then `check` */
	YAMLCONF_CUSTOM,  /* `parse` reads the value */
	YAMLCONF_NODE,    /* any value, read by nobody here: only recorded (`at`) */
	/* No key: the keys of the table `fields` belong to this mapping too, their values at
	 * `offset` within the target (the settings a mapping shares with another). */
	YAMLCONF_INCLUDE,
};

/* Reads node N at PATH (a custom field) or checks the value just stored (`check`): VALUE is
 * the field, that is the target plus the field's offset. Returns false when the value is
 * refused, having said why. A check runs when the value had the right type; a refused value
 * stays stored (a parser decides for itself). */
typedef bool (*yamlconf_fn)(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			    void *value);

/* Where a walk notes a field that it found with a good value: the node, and the path that
 * errors about it name. When its mapping is walked, a field with an `at` gets its key and path
 * whether found or not (a later error about an absent key can name it), and a node only when
 * found good (of the right type, and passed its check). */
#define YAMLCONF_PATH_MAX 256
struct yamlconf_at {
	const yaml_node_t *node;
	const char *key;
	char path[YAMLCONF_PATH_MAX];
};
/* A field's `at`: a struct yamlconf_at member of the walk's FOUND struct. 0: not noted. */
#define YAMLCONF_AT(type, member) (offsetof(type, member) + 1)

/* One key of a mapping. A table is an array of these ending with {0}. */
struct yamlconf_field {
	const char *key;
	enum yamlconf_type type;
	size_t offset;                        /* of the value in the walk's target */
	unsigned flags;                       /* enum yamlconf_flags */
	uint64_t min, max;                    /* YAMLCONF_UINT */
	double dmin, dmax;                    /* YAMLCONF_DOUBLE */
	const char *const *names;             /* YAMLCONF_ENUM */
	const struct yamlconf_alias *aliases; /* YAMLCONF_ENUM, may be NULL */
	const struct yamlconf_field *fields;  /* YAMLCONF_MAPPING, YAMLCONF_INCLUDE */
	yamlconf_fn parse;                    /* YAMLCONF_CUSTOM */
	yamlconf_fn check;                    /* any type, may be NULL */
	size_t at;                            /* YAMLCONF_AT(...) or 0 */
	const char *missing;                  /* a hint after "missing required key 'KEY'" */
};

/* At most this many keys in a table, its includes counted (a bigger table aborts: a bug). */
#define YAMLCONF_MAX_FIELDS 32

/* Reads the mapping MAP at PATH ("" at the top) against FIELDS, storing values in TARGET and
 * noting fields with an `at` in FOUND (may be NULL when none has one; the fields of nested and
 * included tables note theirs in it too). Each key, in file order, is refused when it is not a
 * plain scalar, unknown ("unknown key 'k' (expected one of: ...)") or there twice ("duplicate
 * key (first set at line N)"), and else read by its field; then the required ones found
 * missing are said. Returns true when MAP is a mapping and nothing in it was wrong. */
bool yamlconf_walk(struct yamlconf *yc, const yaml_node_t *map, const char *path,
		   const struct yamlconf_field *fields, void *target, void *found);

#endif
