/* Integration-test harness; see harness.h. */
#include "harness.h"

#include "client.h"
#include "clock.h"
#include "keys.h"
#include "wire.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define ARGS_MAX 32
#define AGENT_ARGS_MAX 34
_Static_assert(AGENT_ARGS_MAX > 23 + HARNESS_AGENT_EXTRA_ARGS_MAX,
               "the agent's own options (--metrics too), the extra ones and the NULL fit");
#define KEY_PATHS_MAX 16
#define POLL_STEP_MS 20

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...);

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "harness: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(99);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int harness_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0)
        die("cannot find a free port: %s", strerror(errno));
    close(fd);
    return ntohs(addr.sin_port);
}

pid_t harness_spawn(char *const argv[], const char *log_path)
{
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, STDERR_FILENO);
            dup2(fd, STDOUT_FILENO);
            close(fd);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

int harness_stop(proc_t *p, int signo)
{
    if (p->pid <= 0)
        return 0;
    kill(p->pid, signo);
    if (p->paused && signo != SIGKILL)
        kill(p->pid, SIGCONT);
    p->paused = false;
    int64_t deadline = clock_mono_ms() + HARNESS_STOP_TIMEOUT_MS;
    int status = 0;
    while (waitpid(p->pid, &status, WNOHANG) == 0) {
        if (clock_mono_ms() > deadline) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &status, 0);
            p->pid = 0;
            return -1000;
        }
        sleep_ms(POLL_STEP_MS);
    }
    p->pid = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

void harness_pause(proc_t *p)
{
    if (p->pid > 0 && !p->paused && kill(p->pid, SIGSTOP) == 0)
        p->paused = true;
}

void harness_resume(proc_t *p)
{
    if (p->pid > 0 && p->paused)
        kill(p->pid, SIGCONT);
    p->paused = false;
}

int harness_run_to_file(char *const argv[], const char *path)
{
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0)
            _exit(126);
        dup2(fd, STDOUT_FILENO);
        close(fd);
        execv(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

int harness_run(char *const argv[], char *out, size_t out_size)
{
    int pipefd[2];
    if (pipe(pipefd) != 0)
        die("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pipefd[1], STDOUT_FILENO);
        close(pipefd[0]);
        close(pipefd[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(pipefd[1]);
    size_t used = 0;
    ssize_t n;
    char scratch[4096];
    while ((n = read(pipefd[0], scratch, sizeof scratch)) > 0) {
        size_t room = out_size > used + 1 ? out_size - used - 1 : 0;
        size_t take = (size_t)n < room ? (size_t)n : room;
        memcpy(out + used, scratch, take);
        used += take;
    }
    out[used] = '\0';
    close(pipefd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

bool harness_wait_reply(const char *endpoint, int timeout_ms)
{
    static const uint8_t probe[] = {0xff, 0xff, 0xff}; /* garbage: answered 30 at once */
    int64_t deadline = clock_mono_ms() + timeout_ms;
    while (clock_mono_ms() < deadline) {
        client_t *c = NULL;
        authorization_t *auth = NULL;
        if (client_new(&c, endpoint) == 0 &&
            client_call_raw(c, probe, sizeof probe, 200, &auth) == 0) {
            wire_auth_free(auth);
            client_destroy(&c);
            return true;
        }
        client_destroy(&c);
        sleep_ms(POLL_STEP_MS);
    }
    return false;
}

void world_init(world_t *w)
{
    memset(w, 0, sizeof *w);
    snprintf(w->dir, sizeof w->dir, "/tmp/coalition-it.XXXXXX");
    if (mkdtemp(w->dir) == NULL)
        die("mkdtemp: %s", strerror(errno));
    snprintf(w->ledger, sizeof w->ledger, "%s/ledger", w->dir);
    snprintf(w->broker_endpoint, sizeof w->broker_endpoint, "tcp://127.0.0.1:%d",
             harness_free_port());
    snprintf(w->broker.log_path, sizeof w->broker.log_path, "%s/broker.log", w->dir);
    snprintf(w->admin_endpoint, sizeof w->admin_endpoint, "ipc://%s/admin.sock", w->ledger);
    snprintf(w->broker_pub, sizeof w->broker_pub, "%s/broker.pub", w->ledger);
    w->till_wait_ms = 1000;
    w->retry_ms = 500;
    char out[256];
    if (world_ctl(w, out, sizeof out, "init", NULL) != 0)
        die("coalitionctl init failed: %s", out);
}

void world_destroy(world_t *w)
{
    for (size_t i = 0; i < w->agent_count; i++)
        harness_stop(&w->agents[i].proc, SIGTERM);
    harness_stop(&w->broker, SIGTERM);
    if (getenv("COALITION_KEEP_TEST_DIRS") != NULL) {
        fprintf(stderr, "harness: kept %s\n", w->dir);
        return;
    }
    char *argv[] = {"/bin/rm", "-rf", w->dir, NULL};
    char out[16];
    harness_run(argv, out, sizeof out);
}

void world_start_broker(world_t *w)
{
    char memory[16], metrics[32];
    snprintf(memory, sizeof memory, "%d", w->broker_memory_max_mb);
    snprintf(metrics, sizeof metrics, "127.0.0.1:%d", w->broker_metrics_port);
    char *argv[ARGS_MAX] = {COALITION_BROKER_BIN, "--ledger", w->ledger, "--bind",
                            w->broker_endpoint};
    size_t n = 5;
    if (w->insecure)
        argv[n++] = "--insecure";
    if (w->broker_memory_max_mb > 0) {
        argv[n++] = "--memory-max-mb";
        argv[n++] = memory;
    }
    if (w->broker_expire_at != NULL) {
        argv[n++] = "--expire-at";
        argv[n++] = (char *)w->broker_expire_at;
    }
    argv[n++] = "--metrics"; /* off unless asked: tests run side by side */
    argv[n++] = w->broker_metrics_port > 0 ? metrics : "off";
    if (w->broker_feed != NULL) {
        argv[n++] = "--feed";
        argv[n++] = (char *)w->broker_feed;
    }
    argv[n] = NULL;
    w->broker.pid = harness_spawn(argv, w->broker.log_path);
    w->broker.paused = false;
    /* The admin socket binds after the partner socket: when it answers, both are up. */
    if (!harness_wait_reply(w->admin_endpoint, HARNESS_READY_TIMEOUT_MS))
        die("broker did not come up on %s (log %s)", w->broker_endpoint, w->broker.log_path);
}

int world_stop_broker(world_t *w, int signo) { return harness_stop(&w->broker, signo); }

static void spawn_agent(world_t *w, agent_proc_t *a)
{
    char wait_ms[16], retry_ms[16], heartbeat_ms[16], metrics[32];
    snprintf(wait_ms, sizeof wait_ms, "%d", w->till_wait_ms);
    snprintf(retry_ms, sizeof retry_ms, "%d", w->retry_ms);
    snprintf(heartbeat_ms, sizeof heartbeat_ms, "%d", w->heartbeat_ms);
    char *argv[AGENT_ARGS_MAX];
    size_t n = 0;
    argv[n++] = COALITION_AGENT_BIN;
    argv[n++] = "--partner";
    argv[n++] = a->partner_id;
    argv[n++] = "--broker";
    argv[n++] = w->broker_endpoint;
    argv[n++] = "--data";
    argv[n++] = a->data_dir;
    argv[n++] = "--listen";
    argv[n++] = a->endpoint;
    argv[n++] = "--till-wait-ms";
    argv[n++] = wait_ms;
    argv[n++] = "--retry-ms";
    argv[n++] = retry_ms;
    if (w->insecure) {
        argv[n++] = "--insecure";
    } else {
        argv[n++] = "--key";
        argv[n++] = (char *)world_key(w, a->partner_id, "partner");
        argv[n++] = "--broker-key";
        argv[n++] = w->broker_pub;
    }
    if (a->site_id[0] != '\0') {
        argv[n++] = "--site";
        argv[n++] = a->site_id;
    }
    if (w->heartbeat_ms > 0) {
        argv[n++] = "--heartbeat-ms";
        argv[n++] = heartbeat_ms;
    }
    if (w->agent_metrics && a->metrics_port == 0)
        a->metrics_port = harness_free_port();
    if (a->metrics_port > 0) {
        snprintf(metrics, sizeof metrics, "127.0.0.1:%d", a->metrics_port);
        argv[n++] = "--metrics";
        argv[n++] = metrics;
    }
    for (size_t i = 0; i < HARNESS_AGENT_EXTRA_ARGS_MAX && w->agent_args[i] != NULL; i++)
        argv[n++] = (char *)w->agent_args[i];
    assert(n < AGENT_ARGS_MAX);
    argv[n] = NULL;
    a->proc.pid = harness_spawn(argv, a->proc.log_path);
    a->proc.paused = false;
    if (!harness_wait_reply(a->endpoint, HARNESS_READY_TIMEOUT_MS))
        die("agent %s %s did not come up (log %s)", a->partner_id, a->site_id, a->proc.log_path);
}

agent_proc_t *world_start_agent(world_t *w, const char *partner_id)
{
    return world_start_agent_at(w, partner_id, NULL);
}

agent_proc_t *world_start_agent_at(world_t *w, const char *partner_id, const char *site_id)
{
    const char *site = site_id != NULL ? site_id : "";
    agent_proc_t *a = NULL;
    for (size_t i = 0; i < w->agent_count; i++) {
        if (strcmp(w->agents[i].partner_id, partner_id) == 0 &&
            strcmp(w->agents[i].site_id, site) == 0)
            a = &w->agents[i];
    }
    if (a == NULL) {
        if (w->agent_count == HARNESS_AGENTS_MAX)
            die("too many agents");
        a = &w->agents[w->agent_count++];
        char dir[HARNESS_DIR_BYTES], name[sizeof a->partner_id + HARNESS_SITE_BYTES];
        memcpy(dir, w->dir, sizeof dir);
        snprintf(a->partner_id, sizeof a->partner_id, "%s", partner_id);
        snprintf(a->site_id, sizeof a->site_id, "%s", site);
        snprintf(name, sizeof name, "%s%s%s", partner_id, site[0] != '\0' ? "-" : "", site);
        snprintf(a->data_dir, sizeof a->data_dir, "%s/agent-%s", dir, name);
        snprintf(a->endpoint, sizeof a->endpoint, "ipc://%s/agent-%s.sock", dir, name);
        snprintf(a->proc.log_path, sizeof a->proc.log_path, "%s/agent-%s.log", dir, name);
    }
    spawn_agent(w, a);
    return a;
}

void world_restart_agent(world_t *w, agent_proc_t *a)
{
    if (a->proc.pid > 0)
        harness_stop(&a->proc, SIGTERM);
    spawn_agent(w, a);
}

int world_stop_agent(world_t *w, agent_proc_t *a, int signo)
{
    (void)w;
    return harness_stop(&a->proc, signo);
}

static int run_va(char **head, size_t head_count, char *out, size_t out_size, const char *arg0,
                  va_list ap)
{
    char *argv[ARGS_MAX];
    size_t n = 0;
    for (; n < head_count; n++)
        argv[n] = head[n];
    for (const char *arg = arg0; arg != NULL && n < ARGS_MAX - 1; arg = va_arg(ap, const char *))
        argv[n++] = (char *)arg;
    argv[n] = NULL;
    return harness_run(argv, out, out_size);
}

const char *world_key(world_t *w, const char *participant, const char *role)
{
    static char paths[KEY_PATHS_MAX][HARNESS_PATH_BYTES];
    static size_t next;
    char *path = paths[next++ % KEY_PATHS_MAX];
    snprintf(path, HARNESS_PATH_BYTES, "%s/%s.key", w->dir, participant);
    if (access(path, F_OK) == 0)
        return path;
    char out[1024];
    int rc = 0;
    if (strcmp(role, "bank") == 0) /* a bank is added before its key; once is enough */
        rc = world_ctl(w, out, sizeof out, "bank", "add", participant, NULL);
    if (rc != 0 && strstr(out, "already a bank") == NULL)
        die("coalitionctl bank add %s failed (%d): %s", participant, rc, out);
    rc = world_ctl(w, out, sizeof out, "key", "new", participant, "--role", role, "--out", path,
                   NULL);
    if (rc != 0)
        die("coalitionctl key new %s --role %s failed (%d): %s", participant, role, rc, out);
    return path;
}

static void load_key(world_t *w, const char *participant, key_pair_t *key, char *server)
{
    char why[KEY_WHY_BYTES_MAX];
    if (keys_read_secret(world_key(w, participant, "partner"), key, why, sizeof why) != 0 ||
        keys_read_public(w->broker_pub, server, why, sizeof why) != 0)
        die("cannot load keys: %s", why);
}

int world_client(world_t *w, const char *participant, struct client **out)
{
    if (w->insecure)
        return client_new(out, w->broker_endpoint);
    key_pair_t key;
    char server[KEY_Z85_BYTES];
    load_key(w, participant, &key, server);
    return client_new_curve(out, w->broker_endpoint, &key, server);
}

void world_curve_socket(world_t *w, void *sock, const char *participant)
{
    if (w->insecure)
        return;
    key_pair_t key;
    char server[KEY_Z85_BYTES];
    load_key(w, participant, &key, server);
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server, KEY_Z85_BYTES) ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, key.public_z85, KEY_Z85_BYTES) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, key.secret_z85, KEY_Z85_BYTES))
        die("cannot set CURVE options: %s", zmq_strerror(zmq_errno()));
}

int world_ctl(world_t *w, char *out, size_t out_size, const char *arg0, ...)
{
    char *head[] = {COALITIONCTL_BIN, "--ledger", w->ledger};
    va_list ap;
    va_start(ap, arg0);
    int rc = run_va(head, 3, out, out_size, arg0, ap);
    va_end(ap);
    return rc;
}

int world_pos(world_t *w, const agent_proc_t *a, char *out, size_t out_size, const char *arg0, ...)
{
    (void)w;
    char *head[] = {COALITION_POS_BIN, "--agent", (char *)a->endpoint, "--json"};
    va_list ap;
    va_start(ap, arg0);
    int rc = run_va(head, 4, out, out_size, arg0, ap);
    va_end(ap);
    return rc;
}
