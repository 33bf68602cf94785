/*
 * p2plibs: SPANK plugin adding --p2plibs=DIR[,DIR...] (or auto:PROGRAM: what PROGRAM loads) to
 * sbatch, salloc and srun.
 *
 * It has no logic of its own; p2prun does the work:
 *   - allocator/local context (sbatch, salloc, srun creating an allocation): runs
 *     `p2prun slurm head --libs DIRS`, which fails for a bad directory (so the job is refused at
 *     submit time) or starts the job's tracker + seeder and prints the job spec. The spec goes to
 *     the prolog/epilog as SPANK_P2PRUN_JOB and to the job as SLURM_SPANK_P2PRUN_JOB
 *     (spank_job_control_setenv; spank_setenv is not available in the allocator context). An srun
 *     inside such a job finds the spec in its environment and starts nothing.
 *   - remote context, per task (slurm_spank_task_init): applies the environment the prolog's
 *     agent wrote for this node (the library path first on LD_LIBRARY_PATH; with auto, the audit
 *     module that sends DT_RPATH and absolute dlopen loads to the mount, and PYTHONPATH), and sets
 *     P2PRUN_JOB for p2prun in the job.
 *
 * plugstack.conf arguments: p2prun=PATH (the p2prun binary), run_dir=DIR (p2prun's run dir on the
 * nodes), mount_root=DIR (where nodes mount), store_dir=DIR (where nodes keep the bytes),
 * mode=block|file|eager (the mounts' data mode).
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <slurm/spank.h>
#include "task-env.h"

SPANK_PLUGIN(p2plibs, 1);

#ifndef P2PRUN_BIN
#define P2PRUN_BIN "/usr/local/bin/p2prun"
#endif
#define SPEC_MAX 8192

static char *p2plibs;
static char p2prun_bin[PATH_MAX] = P2PRUN_BIN;
static char run_dir[PATH_MAX] = "/tmp/p2prun-run-0";
static char mount_root[PATH_MAX];
static char store_dir[PATH_MAX];
static char mode[16];

static int on_p2plibs(int val, const char *optarg, int remote)
{
	(void)val;
	(void)remote;
	free(p2plibs);
	p2plibs = strdup(optarg ? optarg : "");
	return p2plibs ? 0 : -1;
}

static struct spank_option p2plibs_option = {
	"p2plibs", "DIR[,DIR...]|auto:PROGRAM",
	"Load the job's shared libraries peer-to-peer from DIR(s), or what PROGRAM loads (p2prun): "
	"every node mounts them and tasks get them first on LD_LIBRARY_PATH",
	1, 0, on_p2plibs
};

static void parse_args(int ac, char **av)
{
	for (int i = 0; i < ac; i++) {
		if (strncmp(av[i], "p2prun=", 7) == 0)
			snprintf(p2prun_bin, sizeof p2prun_bin, "%s", av[i] + 7);
		else if (strncmp(av[i], "run_dir=", 8) == 0)
			snprintf(run_dir, sizeof run_dir, "%s", av[i] + 8);
		else if (strncmp(av[i], "mount_root=", 11) == 0)
			snprintf(mount_root, sizeof mount_root, "%s", av[i] + 11);
		else if (strncmp(av[i], "store_dir=", 10) == 0)
			snprintf(store_dir, sizeof store_dir, "%s", av[i] + 10);
		else if (strncmp(av[i], "mode=", 5) == 0)
			snprintf(mode, sizeof mode, "%s", av[i] + 5);
		else
			slurm_error("p2plibs: unknown plugstack argument \"%s\"", av[i]);
	}
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	parse_args(ac, av);
	/* Registered in every context: a plugin that only declares spank_options is not seen by sbatch. */
	return spank_option_register(sp, &p2plibs_option);
}

/* Runs `p2prun slurm head --libs DIRS [--mount-root DIR]`; its stdout (the spec) lands in spec. */
static int run_head(char *spec, size_t len)
{
	int out[2];
	if (pipe(out) != 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		dup2(out[1], STDOUT_FILENO);
		close(out[0]);
		close(out[1]);
		/* The nodes' settings go into the job spec the head prints: the nodes read them there. */
		setenv("P2PRUN_RUN_DIR", run_dir, 1);
		if (store_dir[0])
			setenv("P2PRUN_STORE_DIR", store_dir, 1);
		if (mode[0])
			setenv("P2PRUN_MODE", mode, 1);
		if (mount_root[0])
			execl(p2prun_bin, p2prun_bin, "slurm", "head", "--libs", p2plibs, "--mount-root", mount_root, (char *)NULL);
		else
			execl(p2prun_bin, p2prun_bin, "slurm", "head", "--libs", p2plibs, (char *)NULL);
		fprintf(stderr, "p2plibs: cannot run %s: %s\n", p2prun_bin, strerror(errno));
		_exit(127);
	}
	close(out[1]);
	size_t got = 0;
	ssize_t n;
	while (got < len - 1 && (n = read(out[0], spec + got, len - 1 - got)) > 0)
		got += (size_t)n;
	close(out[0]);
	spec[got] = '\0';
	spec[strcspn(spec, "\n")] = '\0';
	int status;
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || spec[0] == '\0')
		return -1;
	return 0;
}

int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
	(void)ac;
	(void)av;
	spank_context_t ctx = spank_context();
	if (!p2plibs || (ctx != S_CTX_ALLOCATOR && ctx != S_CTX_LOCAL))
		return 0;
	if (getenv("P2PRUN_JOB") || getenv("SLURM_SPANK_P2PRUN_JOB"))
		return 0; /* a step of a job whose head already runs */
	static char spec[SPEC_MAX];
	if (run_head(spec, sizeof spec) != 0) {
		slurm_error("p2plibs: --p2plibs=%s failed (see the p2prun error above)", p2plibs);
		return -1;
	}
	if (spank_job_control_setenv(sp, "P2PRUN_JOB", spec, 1) != ESPANK_SUCCESS) {
		slurm_error("p2plibs: cannot pass the job spec on");
		return -1;
	}
	return 0;
}

/* One line of the node state's task-env file (native/task-env.h), applied to the task's environment. */
static int apply_task_env(spank_t sp, char *line)
{
	static char own[PATH_MAX * 8], value[PATH_MAX * 16];
	struct task_env e;
	int parsed = task_env_parse(line, &e);
	if (parsed <= 0)
		return parsed;
	if (spank_getenv(sp, e.name, own, sizeof own) != ESPANK_SUCCESS)
		own[0] = '\0';
	if (task_env_value(&e, own, value, sizeof value) != 0)
		return -1;
	return spank_setenv(sp, e.name, value, 1) == ESPANK_SUCCESS ? 0 : -1;
}

int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
	(void)ac;
	(void)av;
	if (!p2plibs)
		return 0;
	uint32_t job_id;
	static char line[PATH_MAX * 8], spec[SPEC_MAX];
	char node[256], file[sizeof run_dir + 300];
	if (spank_get_item(sp, S_JOB_ID, &job_id) != ESPANK_SUCCESS ||
	    spank_getenv(sp, "SLURMD_NODENAME", node, sizeof node) != ESPANK_SUCCESS) {
		slurm_error("p2plibs: cannot tell this task's job and node");
		return -1;
	}
	/* The node state's task-env file, as lib/session/node-state.ts lays it out (the same name mangling). */
	for (char *c = node; *c; c++)
		if (!(*c == '.' || *c == '-' || *c == '_' || (*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z')))
			*c = '_';
	snprintf(file, sizeof file, "%s/job-slurm-%u-%s/task-env", run_dir, job_id, node);
	FILE *f = fopen(file, "r");
	if (!f) {
		slurm_error("p2plibs: no p2prun mount on node %s (%s missing: did the Prolog hook run?)", node, file);
		return -1;
	}
	int rc = 0;
	while (rc == 0 && fgets(line, sizeof line, f))
		if (apply_task_env(sp, line) != 0) {
			slurm_error("p2plibs: cannot set the task's environment from %s", file);
			rc = -1;
		}
	fclose(f);
	if (rc != 0)
		return rc;
	/* For p2prun inside the job: the job's spec (which says where the prolog's agents keep their state). */
	if (spank_getenv(sp, "SLURM_SPANK_P2PRUN_JOB", spec, sizeof spec) == ESPANK_SUCCESS)
		spank_setenv(sp, "P2PRUN_JOB", spec, 0);
	return 0;
}

int slurm_spank_exit(spank_t sp, int ac, char **av)
{
	(void)sp;
	(void)ac;
	(void)av;
	free(p2plibs);
	p2plibs = NULL;
	return 0;
}
