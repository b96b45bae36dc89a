/* The one JSON writer. Objects print their keys in QEMU's QDict order (512 hash buckets,
 * tdb_hash, newest first within a bucket) and with QEMU's pretty printer, so qimg's
 * --output=json is byte-identical to qemu-img's. */
#ifndef QIMG_UTIL_JSON_H
#define QIMG_UTIL_JSON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Link names: Debian's libjansson (parser of json: image names, block/blockspec_json.c)
 * exports json_object, json_array, json_string and json_string_value too, and an
 * executable's definition would take the place of the library's own. qimg's writer keeps
 * its names in the source and links as qimg_json_*. */
#define json_object qimg_json_object
#define json_array qimg_json_array
#define json_string qimg_json_string
#define json_string_value qimg_json_string_value

typedef struct json json_t;

json_t *json_object(void);
/* An object of qimg's own (a check finding, a repair-plan write): keys print in the order
 * they were first set, not in QDict order, so every such object reads the same way. */
json_t *json_object_ordered(void);
json_t *json_array(void);
json_t *json_string(const char *s);
json_t *json_string_len(const char *s, size_t len);
json_t *json_int(int64_t v);
json_t *json_uint(uint64_t v);
json_t *json_bool(bool v);

/* Adds key=val to an object (takes ownership of val); an existing key is replaced. */
void json_set(json_t *obj, const char *key, json_t *val);
/* Appends val to an array (takes ownership). */
void json_append(json_t *arr, json_t *val);
size_t json_array_len(const json_t *arr);
void json_free(json_t *v);

/* QEMU's pretty form, no trailing newline. */
void json_print(FILE *f, const json_t *v);

/* qemu's human dump of a QObject (block/qapi.c dump_qobject), members in QDict order, keys
 * with '-' shown as ' ', 4 spaces per indent level; info's "Format specific information". */
void json_print_human(FILE *f, const json_t *v, int indent);

/* Member of an object, or NULL. */
const json_t *json_get(const json_t *obj, const char *key);

/* Scalar values: the string (NULL if v is not one); integers and booleans as int64. */
const char *json_string_value(const json_t *v);
int64_t json_int_value(const json_t *v);

/* QEMU's tdb_hash, exposed for tests. */
unsigned json_qdict_hash(const char *key);

#endif
