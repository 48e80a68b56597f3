/* Integration-test harness: temporary directories, free loopback ports, and the real
 * programs (broker, agents, coalitionctl, coalition-pos) as child processes. Readiness
 * is polled over the programs' own sockets; nothing waits on a fixed sleep. Faults for
 * the tests that inject them: SIGKILL and restart, SIGSTOP and SIGCONT (a stopped
 * process is continued before it is stopped for good, so it can handle the signal). */
#ifndef COALITION_HARNESS_H
#define COALITION_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HARNESS_DIR_BYTES 128
#define HARNESS_PATH_BYTES 512
#define HARNESS_AGENTS_MAX 4
#define HARNESS_READY_TIMEOUT_MS 10000
#define HARNESS_STOP_TIMEOUT_MS 15000

#define HARNESS_SITE_BYTES 33
#define HARNESS_AGENT_EXTRA_ARGS_MAX 8

typedef struct proc {
    pid_t pid;   /* 0 when not running */
    bool paused; /* SIGSTOPped by harness_pause */
    char log_path[HARNESS_PATH_BYTES];
} proc_t;

typedef struct agent_proc {
    proc_t proc;
    char partner_id[64];
    char site_id[HARNESS_SITE_BYTES]; /* "" : no --site, the agent's default */
    char data_dir[HARNESS_PATH_BYTES];
    char endpoint[HARNESS_PATH_BYTES]; /* the till socket */
    int metrics_port;                  /* > 0: its --metrics 127.0.0.1 port (agent_metrics) */
} agent_proc_t;

typedef struct world {
    char dir[HARNESS_DIR_BYTES];
    char ledger[HARNESS_PATH_BYTES];
    char broker_endpoint[64];
    char admin_endpoint[HARNESS_PATH_BYTES + 32];
    char broker_pub[HARNESS_PATH_BYTES + 32]; /* the broker's public key file (coalitionctl init) */
    bool insecure; /* start broker and agents with --insecure (plain TCP); default CURVE */
    int broker_memory_max_mb;     /* > 0: the broker's --memory-max-mb */
    const char *broker_expire_at; /* non-NULL: the broker's --expire-at */
    const char *broker_feed;      /* non-NULL: the broker's --feed (e.g. "off") */
    proc_t broker;
    agent_proc_t agents[HARNESS_AGENTS_MAX];
    size_t agent_count;
    int till_wait_ms; /* passed to agents; default 1000 */
    int retry_ms;     /* passed to agents; default 500 */
    int heartbeat_ms; /* passed to agents when > 0; default 0 (the agent's own) */
    /* More options for every agent started (NULL-terminated; at most the bound). */
    const char *agent_args[HARNESS_AGENT_EXTRA_ARGS_MAX + 1];
    int broker_metrics_port; /* > 0: the broker's --metrics 127.0.0.1 port; 0: off */
    bool agent_metrics;      /* agents get --metrics on a free port each (metrics_port) */
} world_t;

/* Make a temp dir, init a ledger, pick a port. Does not start anything. */
void world_init(world_t *w);
/* Stop everything still running and remove the temp dir. */
void world_destroy(world_t *w);

/* Start the broker and wait until it answers on its partner socket. */
void world_start_broker(world_t *w);
/* Stop it with `signo` (SIGTERM or SIGKILL); returns its exit status or -signal. */
int world_stop_broker(world_t *w, int signo);
/* Start an agent for `partner_id` (index = order of calls) and wait until it answers. */
agent_proc_t *world_start_agent(world_t *w, const char *partner_id);
/* The same for one site of a partner (`site_id` NULL or "": the agent's default site).
 * An agent is identified by (partner, site); its data and socket live under the world. */
agent_proc_t *world_start_agent_at(world_t *w, const char *partner_id, const char *site_id);
int world_stop_agent(world_t *w, agent_proc_t *a, int signo);
/* Start a stopped agent again with the same data directory and till socket. */
void world_restart_agent(world_t *w, agent_proc_t *a);
/* The secret key file of `participant` (role "partner" or "bank"), made with
 * `coalitionctl key new` the first time (the broker must be running, and a partner
 * added). Agents and world_client use it. */
const char *world_key(world_t *w, const char *participant, const char *role);
/* A CURVE client of the broker's partner socket as `participant` (partner role). */
struct client;
int world_client(world_t *w, const char *participant, struct client **out);
/* Make a raw ZeroMQ socket a CURVE client as `participant`, before it connects. */
void world_curve_socket(world_t *w, void *sock, const char *participant);
/* Run coalitionctl with the world's ledger and `args` (NULL-terminated); capture stdout. */
int world_ctl(world_t *w, char *out, size_t out_size, const char *arg0, ...);
/* Run coalition-pos against an agent with `args`; capture stdout. */
int world_pos(world_t *w, const agent_proc_t *a, char *out, size_t out_size, const char *arg0, ...);

/* Lower level. */
int harness_free_port(void);
pid_t harness_spawn(char *const argv[], const char *log_path);
/* Signal and wait; exit status, -signal if killed, or -1000 if it did not exit in time.
 * A paused process is continued after the signal is sent. */
int harness_stop(proc_t *p, int signo);
/* SIGSTOP / SIGCONT a running process; no-ops when it is not running. */
void harness_pause(proc_t *p);
void harness_resume(proc_t *p);
/* Run to completion, capturing stdout into out (NUL-terminated). Returns exit status. */
int harness_run(char *const argv[], char *out, size_t out_size);
/* Run to completion with stdout written to `path` (truncated first). Returns exit status. */
int harness_run_to_file(char *const argv[], const char *path);
/* Poll an endpoint with raw bytes until any reply arrives. */
bool harness_wait_reply(const char *endpoint, int timeout_ms);

#endif
