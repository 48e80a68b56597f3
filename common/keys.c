/* CURVE key files; see keys.h. */
#define _DEFAULT_SOURCE /* explicit_bzero */
#include "keys.h"

#include "errors.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>
#include <zmq.h>

#define PUBLIC_LABEL "public-key"
#define SECRET_LABEL "secret-key"

bool keys_z85_valid(const char *s)
{
    if (s == NULL || strnlen(s, KEY_Z85_BYTES) != KEY_Z85_LEN)
        return false;
    uint8_t binary[KEY_BINARY_BYTES];
    return zmq_z85_decode(binary, s) != NULL;
}

int keys_generate(key_pair_t *out)
{
    assert(out != NULL);
    if (zmq_curve_keypair(out->public_z85, out->secret_z85) != 0)
        return CL_ERR_ZMQ;
    assert(keys_z85_valid(out->public_z85) && keys_z85_valid(out->secret_z85));
    return CL_OK;
}

/* Write `text` to a new file at `path` with `mode`; exclusive when `exclusive`. */
static int write_file(const char *path, const char *text, mode_t mode, bool exclusive)
{
    int flags = O_WRONLY | O_CREAT | (exclusive ? O_EXCL : O_TRUNC) | O_CLOEXEC;
    int fd = open(path, flags, mode);
    if (fd < 0)
        return errno == EEXIST ? CL_ERR_EXISTS : CL_ERR_IO;
    size_t len = strlen(text);
    bool ok = fchmod(fd, mode) == 0 && write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok)
        unlink(path);
    return ok ? CL_OK : CL_ERR_IO;
}

int keys_write_secret(const char *path, const key_pair_t *pair, const char *comment)
{
    assert(path != NULL && pair != NULL && comment != NULL);
    assert(keys_z85_valid(pair->public_z85) && keys_z85_valid(pair->secret_z85));
    char text[KEY_FILE_BYTES_MAX];
    int n = snprintf(text, sizeof text,
                     "# %s\n# Secret: keep this file owner-only (mode 0600).\n" PUBLIC_LABEL
                     " = %s\n" SECRET_LABEL " = %s\n",
                     comment, pair->public_z85, pair->secret_z85);
    if (n < 0 || (size_t)n >= sizeof text)
        return CL_ERR_INVALID;
    int rc = write_file(path, text, 0600, true);
    explicit_bzero(text, sizeof text);
    return rc;
}

int keys_write_public(const char *path, const char *public_z85, const char *comment)
{
    assert(path != NULL && keys_z85_valid(public_z85) && comment != NULL);
    char text[KEY_FILE_BYTES_MAX];
    int n = snprintf(text, sizeof text, "# %s\n" PUBLIC_LABEL " = %s\n", comment, public_z85);
    if (n < 0 || (size_t)n >= sizeof text)
        return CL_ERR_INVALID;
    return write_file(path, text, 0644, false);
}

/* Read the whole (small) file into text. */
static int read_file(const char *path, bool owner_only, char *text, size_t size, char *why,
                     size_t why_size)
{
    /* O_NONBLOCK: a FIFO put in a key's place must not hang the program before the
     * regular-file check. Symbolic links are followed (secrets are often mounted so);
     * the mode checked is the target's. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, why_size, "cannot open key file %s: %s", path,
                 fd < 0 ? strerror(errno) : "not a regular file");
        if (fd >= 0)
            close(fd);
        return CL_ERR_IO;
    }
    if (owner_only && (st.st_mode & 077) != 0) {
        snprintf(why, why_size,
                 "secret key file %s is readable by group or others (mode %03o); "
                 "run chmod 600 on it",
                 path, (unsigned)(st.st_mode & 0777));
        close(fd);
        return CL_ERR_PERMISSION;
    }
    ssize_t n = read(fd, text, size - 1);
    close(fd);
    if (n < 0 || (size_t)n >= size - 1) {
        snprintf(why, why_size, "key file %s is unreadable or too large", path);
        return CL_ERR_IO;
    }
    text[n] = '\0';
    return CL_OK;
}

/* Find "label = VALUE" on a line of its own; VALUE must be a Z85 key. */
static bool find_key(const char *text, const char *label, char out[KEY_Z85_BYTES])
{
    size_t label_len = strlen(label);
    for (const char *line = text; line != NULL && *line != '\0';) {
        const char *next = strchr(line, '\n');
        size_t len = next != NULL ? (size_t)(next - line) : strlen(line);
        const char *p = line + label_len;
        if (len >= label_len && line[0] != '#' && strncmp(line, label, label_len) == 0) {
            /* "label = KEY": '=' is also a Z85 character, so exactly one is skipped. */
            while (*p == ' ' || *p == '\t')
                p++;
            if (*p != '=')
                return false;
            p++;
            while (*p == ' ' || *p == '\t')
                p++;
            size_t rest = len - (size_t)(p - line);
            while (rest > 0 && (p[rest - 1] == '\r' || p[rest - 1] == ' ' || p[rest - 1] == '\t'))
                rest--;
            if (rest == KEY_Z85_LEN) {
                memcpy(out, p, KEY_Z85_LEN);
                out[KEY_Z85_LEN] = '\0';
                return keys_z85_valid(out);
            }
            return false;
        }
        line = next != NULL ? next + 1 : NULL;
    }
    return false;
}

int keys_read_secret(const char *path, key_pair_t *out, char *why, size_t why_size)
{
    assert(path != NULL && out != NULL && why != NULL && why_size > 0);
    char text[KEY_FILE_BYTES_MAX];
    int rc = read_file(path, true, text, sizeof text, why, why_size);
    if (rc == CL_OK && (!find_key(text, PUBLIC_LABEL, out->public_z85) ||
                        !find_key(text, SECRET_LABEL, out->secret_z85))) {
        snprintf(why, why_size, "%s has no valid '%s' and '%s' lines", path, PUBLIC_LABEL,
                 SECRET_LABEL);
        rc = CL_ERR_INVALID;
    }
    char derived[KEY_Z85_BYTES];
    if (rc == CL_OK && (zmq_curve_public(derived, out->secret_z85) != 0 ||
                        strcmp(derived, out->public_z85) != 0)) {
        snprintf(why, why_size, "%s: its public key does not belong to its secret key", path);
        rc = CL_ERR_INVALID;
    }
    explicit_bzero(text, sizeof text);
    if (rc != CL_OK)
        explicit_bzero(out, sizeof *out);
    return rc;
}

int keys_read_public(const char *path, char out[KEY_Z85_BYTES], char *why, size_t why_size)
{
    assert(path != NULL && out != NULL && why != NULL && why_size > 0);
    char text[KEY_FILE_BYTES_MAX];
    int rc = read_file(path, false, text, sizeof text, why, why_size);
    if (rc == CL_OK && !find_key(text, PUBLIC_LABEL, out)) {
        snprintf(why, why_size, "%s has no valid '%s' line", path, PUBLIC_LABEL);
        rc = CL_ERR_INVALID;
    }
    explicit_bzero(text, sizeof text);
    return rc;
}

bool keys_endpoint_loopback(const char *endpoint)
{
    if (strncmp(endpoint, "ipc://", 6) == 0 || strncmp(endpoint, "inproc://", 9) == 0)
        return true;
    /* "tcp://SOURCE;ADDRESS" binds or connects to ADDRESS: no source part is accepted. */
    if (strncmp(endpoint, "tcp://", 6) != 0 || strchr(endpoint, ';') != NULL)
        return false;
    /* The host is a literal loopback address: a name (which a connect would resolve) or
     * an interface never is, so "tcp://127.example.com:1" is refused. */
    const char *host = endpoint + 6;
    const char *colon = strrchr(host, ':');
    char literal[INET6_ADDRSTRLEN + 2];
    size_t len = colon != NULL ? (size_t)(colon - host) : 0;
    if (len == 0 || len >= sizeof literal)
        return false;
    memcpy(literal, host, len);
    literal[len] = '\0';
    struct in_addr v4;
    if (strcmp(literal, "localhost") == 0 || strcmp(literal, "[::1]") == 0)
        return true;
    return inet_pton(AF_INET, literal, &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127;
}
