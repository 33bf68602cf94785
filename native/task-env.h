/*
 * One line of the node state's task-env file, as lib/session/node-state.ts writes it (and
 * lib/session/rank-env.ts says what it holds): NAME=VALUE sets NAME; NAME^=VALUE puts VALUE before
 * the process's own value, ':' between; NAME+=VALUE after it. The two C readers, the SPANK plugin's
 * task hook (slurm/p2plibs.c) and the native rank step (native/rank-step.c), share this.
 */
#ifndef P2PRUN_TASK_ENV_H
#define P2PRUN_TASK_ENV_H
#include <stdio.h>
#include <string.h>

struct task_env {
	const char *name, *value;
	char op; /* '=', '^' or '+' */
};

/* Splits `line` in place (a trailing newline dropped): 1 an entry, 0 an empty line, -1 malformed. */
static inline int task_env_parse(char *line, struct task_env *e)
{
	line[strcspn(line, "\n")] = '\0';
	char *eq = strchr(line, '=');
	if (!eq || eq == line)
		return line[0] ? -1 : 0;
	e->op = eq[-1] == '^' || eq[-1] == '+' ? eq[-1] : '=';
	if (e->op != '=')
		eq[-1] = '\0';
	*eq = '\0';
	e->name = line;
	e->value = eq + 1;
	return 1;
}

/* The value the entry gives its variable, whose own value is `own` (NULL or "" if unset), into out; -1 if it does not fit. */
static inline int task_env_value(const struct task_env *e, const char *own, char *out, size_t size)
{
	int n = e->op == '=' || !own || !*own ? snprintf(out, size, "%s", e->value)
		: e->op == '^' ? snprintf(out, size, "%s:%s", e->value, own) : snprintf(out, size, "%s:%s", own, e->value);
	return n >= 0 && (size_t)n < size ? 0 : -1;
}
#endif
