/*
 * p2prun-rank-step ROOT PID PROGRAM [ARGS...]: the rank step without Node. bin/p2prun-rank runs it
 * before `p2prun rank-prepare`. For a rank whose launcher says its local rank and the node's rank
 * count (local rank 0; the others need only their local rank), it registers PID (the shell that becomes the program) with the node's state; local rank
 * 0 starts the node's agent (detached, as lib/session/node.ts's spawnAgent does: start_agent); every rank waits for the agent's mount and prints what the shell execs the
 * program with: the library path, the program's path in the mount (or an empty line: as given),
 * then NAME=VALUE lines to export, as rank-prepare prints them. A Node process per rank cost ~0.08
 * CPU-s and 54 MB; this costs a few milliseconds.
 *
 * It reads formats that TypeScript modules own, and no more of them than it needs:
 *   P2PRUN_JOB     lib/session/job-spec.ts: base64url of the JSON JSON.stringify wrote (version,
 *                  launchId, node.runDir, node.startTimeoutMs, node.agentLingerMs, program);
 *   the hand-off   lib/session/warm-agent.ts: local rank 0 hands the launch to an agent lingering
 *                  from the user's last launch, when the spec says agents linger;
 *   the node state lib/session/node-state.ts: ranks/PID, ready.json (mountPoint), failed.json,
 *                  task-env (lib/session/rank-env.ts: NAME=, NAME^=, NAME+=).
 * Whatever it does not expect (no local rank or count, one rank per node, another spec version, a
 * string it would have to unescape, an agent that failed or was not ready in time, a program not
 * found) makes it exit 100: the shell then runs the Node step, which does all of this itself and
 * reports any failure in its own words. An agent it started that exits before its mount is ready
 * is recorded as the node's failure first (failed.json, as spawnAgent records it), so that the
 * Node step reports it rather than waiting for an agent that will not come.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>
#include "base64.h"
#include "state-files.h"
#include "task-env.h"

#define FALL_BACK 100
#define HANDOFF_MAGIC "p2prun-launch 1"

extern char **environ;

static char *job_json;

static void fall_back(void) { exit(FALL_BACK); }

/*
 * The string value of "key" in JSON written by JSON.stringify (keys unique in the spec, no
 * whitespace); NULL if absent. A value with escapes falls back: paths and ids carry none.
 */
static char *json_string(const char *json, const char *key)
{
	char pattern[64];
	snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
	const char *start = strstr(json, pattern);
	if (!start)
		return NULL;
	start += strlen(pattern);
	const char *end = strchr(start, '"');
	if (!end || memchr(start, '\\', (size_t)(end - start)))
		fall_back();
	return strndup(start, (size_t)(end - start));
}

static long json_number(const char *json, const char *key)
{
	char pattern[64];
	snprintf(pattern, sizeof pattern, "\"%s\":", key);
	const char *start = strstr(json, pattern);
	if (!start)
		fall_back();
	char *end;
	long v = strtol(start + strlen(pattern), &end, 10);
	if (*end != ',' && *end != '}')
		fall_back();
	return v;
}

/* The first of `names` set to a whole number; -1 if none. */
static long first_number(const char *const *names)
{
	for (; *names; names++) {
		const char *v = getenv(*names);
		if (v && *v && strspn(v, "0123456789") == strlen(v))
			return strtol(v, NULL, 10);
	}
	return -1;
}

/* The launchers' local rank and local rank count, in rank-identity.ts's order (Slurm's count, run-length encoded, is left to the Node step). */
static const char *const LOCAL_RANK[] = { "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMIX_LOCAL_RANK", "SLURM_LOCALID",
	"FLUX_TASK_LOCAL_ID", "P2PRUN_LOCAL_RANK", NULL };
static const char *const LOCAL_SIZE[] = { "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMIX_LOCAL_SIZE", "P2PRUN_LOCAL_SIZE", NULL };

/*
 * The node's agent for this node and launch, detached (its own session), its output appended to
 * the node state's agent.log, no descriptor of the rank's but those; -1 if it could not be started.
 * It is `ROOT/dist/p2prun-agent node-agent` (native/agent/node-agent.c), which serves the common
 * launch without Node and becomes `ROOT/bin/p2prun node-agent` for any other; that, where the
 * installation has no native agent.
 */
static pid_t start_agent(const char *root, const char *dir, const char *node, const char *launch, long expect)
{
	char cli[4096], native[4096], log[8400], count[32];
	snprintf(cli, sizeof cli, "%s/bin/p2prun", root);
	snprintf(native, sizeof native, "%s/dist/p2prun-agent", root);
	snprintf(log, sizeof log, "%s/agent.log", dir);
	snprintf(count, sizeof count, "%ld", expect);
	int out = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644), in = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (out < 0 || in < 0)
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		setsid();
		dup2(in, 0);
		dup2(out, 1);
		dup2(out, 2);
		close_range(3, ~0U, 0);
		if (access(native, X_OK) == 0)
			execl(native, native, "node-agent", "--node", node, "--launch-id", launch, "--expect", count, "--", cli, (char *)NULL);
		execl(cli, cli, "node-agent", "--node", node, "--launch-id", launch, "--expect", count, (char *)NULL);
		_exit(127);
	}
	close(out);
	close(in);
	return pid;
}

static int send_all(int fd, const char *data, size_t size)
{
	while (size > 0) {
		ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return 0;
		data += n;
		size -= (size_t)n;
	}
	return 1;
}

#define NOT_ANSWERED (-2)

/*
 * Hands this launch to the node's agent lingering from the user's last launch (lib/session/warm-agent.ts
 * owns the hand-off: the socket RUN_DIR/agent-NODE.sock, NUL-terminated strings, the answer "ok\n").
 * Returns the connection, held until the mount is ready (its end before then: the agent died); -1:
 * none lingers, or it did not take the launch; NOT_ANSWERED: no answer within `timeout_ms` (it may
 * still take it, so no other agent may be started).
 */
static int hand_to_agent(const char *run_dir, const char *node, const char *safe_node, const char *launch, long expect, long timeout_ms)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (snprintf(addr.sun_path, sizeof addr.sun_path, "%s/agent-%s.sock", run_dir, safe_node) >= (int)sizeof addr.sun_path)
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct timeval wait = { .tv_sec = timeout_ms / 1000, .tv_usec = timeout_ms % 1000 * 1000 };
	if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait) != 0) {
		close(fd);
		return -1;
	}
	char count[32];
	snprintf(count, sizeof count, "%ld", expect);
	const char *head[] = { HANDOFF_MAGIC, node, launch, count };
	int ok = 1;
	for (size_t i = 0; ok && i < sizeof head / sizeof *head; i++)
		ok = send_all(fd, head[i], strlen(head[i]) + 1);
	for (char **e = environ; ok && *e; e++)
		ok = send_all(fd, *e, strlen(*e) + 1);
	ok = ok && send_all(fd, "", 1);
	char answer[4] = "";
	size_t got = 0;
	while (ok && got < 3) {
		ssize_t n = read(fd, answer + got, 3 - got);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			close(fd);
			return NOT_ANSWERED;
		}
		if (n <= 0 && !(n < 0 && errno == EINTR))
			ok = 0;
		else if (n > 0)
			got += (size_t)n;
	}
	if (!ok || memcmp(answer, "ok\n", 3) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Whether the agent holding `fd` has ended it (EOF, or an error). */
static int hung_up(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	if (poll(&p, 1, 0) <= 0)
		return 0;
	char byte;
	return read(fd, &byte, 1) <= 0;
}

static int executable(const char *program)
{
	if (strchr(program, '/'))
		return access(program, X_OK) == 0;
	const char *path = getenv("PATH");
	char candidate[4096];
	for (const char *p = path ? path : ""; *p;) {
		size_t len = strcspn(p, ":");
		if (len > 0 && snprintf(candidate, sizeof candidate, "%.*s/%s", (int)len, p, program) < (int)sizeof candidate &&
		    access(candidate, X_OK) == 0)
			return 1;
		p += len + (p[len] == ':');
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 4)
		fall_back();
	const char *root = argv[1], *pid = argv[2], *program = argv[3];
	const char *raw = getenv("P2PRUN_JOB");
	const char *per_rank = getenv("P2PRUN_NODE_PER_RANK");
	long lrank = first_number(LOCAL_RANK), lsize = first_number(LOCAL_SIZE);
	/* Local rank 0 tells its agent how many ranks to wait for; the others need no count. */
	if (!raw || (per_rank && strcmp(per_rank, "1") == 0) || lrank < 0 || (lrank == 0 && lsize < 1))
		fall_back();
	size_t json_size;
	job_json = base64_decode(raw, true, &json_size);
	if (!job_json)
		fall_back();
	/* lib/session/job-spec.ts's JOB_SPEC_VERSION: another falls back to the Node step, which names it. */
	if (strncmp(job_json, "{\"version\":3,", 13) != 0)
		fall_back();
	char *launch_id = json_string(job_json, "launchId"), *run_dir = json_string(job_json, "runDir");
	char *in_mount = json_string(job_json, "program");
	long timeout_ms = json_number(job_json, "startTimeoutMs"), linger_ms = json_number(job_json, "agentLingerMs");
	if (!launch_id || !run_dir)
		fall_back();

	/* The node's name (rank-identity.ts's nodeName) and the state directory (node-state.ts's NodeState.of). */
	char host[256] = "", launch[300], dir[8192], file[8400];
	const char *node = getenv("SLURMD_NODENAME");
	if (!node || !*node)
		node = getenv("P2PRUN_NODE_NAME");
	if (!node || !*node) {
		if (gethostname(host, sizeof host - 1) != 0)
			fall_back();
		node = host;
	}
	if (strcmp(launch_id, "slurm") == 0) {
		const char *job = getenv("SLURM_JOB_ID");
		snprintf(launch, sizeof launch, "slurm-%s", job && *job ? job : "unknown");
	} else {
		snprintf(launch, sizeof launch, "%s", launch_id);
	}
	char safe_node[256];
	size_t k = 0;
	for (const char *c = node; *c && k < sizeof safe_node - 1; c++)
		safe_node[k++] = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' || *c == '.' || *c == '-' ? *c : '_';
	safe_node[k] = '\0';
	snprintf(dir, sizeof dir, "%s/job-%s-%s", run_dir, launch, safe_node);

	/* Registered first: from now on the agent counts this rank's process (node-state.ts's create, register). */
	mkdir(run_dir, 0700);
	mkdir(dir, 0700);
	snprintf(file, sizeof file, "%s/ranks", dir);
	mkdir(file, 0700);
	snprintf(file, sizeof file, "%s/ranks/%s", dir, pid);
	int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0666);
	if (fd < 0)
		fall_back();
	close(fd);

	/* Local rank 0 starts the agent, unless someone did (Slurm's prolog): whoever makes the lock (node-state.ts's claimAgent). */
	pid_t agent = -1;
	int handed = -1;
	if (lrank == 0) {
		snprintf(file, sizeof file, "%s/agent.lock", dir);
		fd = open(file, O_WRONLY | O_CREAT | O_EXCL, 0666);
		if (fd < 0 && errno != EEXIST)
			fall_back();
		if (fd >= 0) {
			close(fd);
			if (linger_ms > 0)
				handed = hand_to_agent(run_dir, node, safe_node, launch, lsize, timeout_ms);
			if (handed == NOT_ANSWERED) {
				char hint[8400];
				snprintf(hint, sizeof hint, "%s/agent-%s.json names it: stop it, or set P2PRUN_AGENT_LINGER=0", run_dir, safe_node);
				node_state_fail(dir, "LAUNCH", "the lingering node agent did not answer its hand-off in time", hint);
				fall_back();
			}
			if (handed < 0 && (agent = start_agent(root, dir, node, launch, lsize)) < 0) {
				node_state_fail(dir, "LAUNCH", "the node agent could not be started", "check that p2prun is installed at the same path on every node");
				fall_back();
			}
		}
	}

	/* The agent's mount: ready.json (written atomically), or failed.json, within the start timeout. */
	char *ready = NULL;
	struct timespec start, now, pause = { 0, 5 * 1000 * 1000 };
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		snprintf(file, sizeof file, "%s/failed.json", dir);
		if (access(file, F_OK) == 0)
			fall_back();
		snprintf(file, sizeof file, "%s/ready.json", dir);
		if ((ready = read_record(file)))
			break;
		int status;
		if (agent > 0 && waitpid(agent, &status, WNOHANG) == agent) {
			char message[128], hint[8400];
			if (WIFSIGNALED(status))
				snprintf(message, sizeof message, "the node agent exited (SIG%s) before its mount was ready", sigabbrev_np(WTERMSIG(status)) ? sigabbrev_np(WTERMSIG(status)) : "?");
			else
				snprintf(message, sizeof message, "the node agent exited (code %d) before its mount was ready", WEXITSTATUS(status));
			snprintf(hint, sizeof hint, "see %s/agent.log", dir);
			/* Read once more: it may have written ready.json, or its own failure, before it left. */
			snprintf(file, sizeof file, "%s/ready.json", dir);
			if ((ready = read_record(file)))
				break;
			node_state_fail(dir, "LAUNCH", message, hint);
			fall_back();
		}
		if (handed >= 0 && hung_up(handed)) {
			snprintf(file, sizeof file, "%s/ready.json", dir);
			if ((ready = read_record(file)))
				break;
			char hint[8400];
			snprintf(hint, sizeof hint, "see %s/agent.log", dir);
			node_state_fail(dir, "LAUNCH", "the lingering node agent ended before its mount was ready", hint);
			fall_back();
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 > timeout_ms)
			fall_back();
		nanosleep(&pause, NULL);
		if (pause.tv_nsec < 50 * 1000 * 1000)
			pause.tv_nsec *= 2;
	}
	char *mount = json_string(ready, "mountPoint");
	if (!mount || (!in_mount && !executable(program)))
		fall_back();

	/* task-env (native/task-env.h), each line combined with this process's own value, as rank-env.ts's applyTaskEnv does. */
	snprintf(file, sizeof file, "%s/task-env", dir);
	char *env = read_record(file);
	if (!env)
		fall_back();
	char *library_path = NULL, *exports = calloc(1, strlen(env) * 2 + 2);
	size_t used = 0;
	for (char *line = strtok(env, "\n"); line; line = strtok(NULL, "\n")) {
		struct task_env e;
		if (task_env_parse(line, &e) != 1)
			fall_back();
		const char *own = getenv(e.name);
		size_t size = strlen(e.value) + (own ? strlen(own) : 0) + 2;
		char *combined = malloc(size);
		if (!combined || task_env_value(&e, own, combined, size) != 0)
			fall_back();
		if (strcmp(e.name, "LD_LIBRARY_PATH") == 0) {
			library_path = combined;
			continue;
		}
		char *grown = realloc(exports, used + strlen(e.name) + strlen(combined) + 3);
		if (!grown)
			fall_back();
		exports = grown;
		used += (size_t)sprintf(exports + used, "%s=%s\n", e.name, combined);
	}
	const char *debug = getenv("P2PRUN_DEBUG");
	if (debug && atoi(debug) >= 2)
		fprintf(stderr, "p2prun rank: node %s: local rank %ld ready without Node\n", node, lrank);
	printf("%s\n", library_path ? library_path : "");
	if (in_mount)
		printf("%s/%s\n", mount, in_mount);
	else
		printf("\n");
	fputs(exports, stdout);
	return fflush(stdout) == 0 ? 0 : FALL_BACK;
}
