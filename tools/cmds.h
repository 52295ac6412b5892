/*
 * cmds.h: the subcommands of the `vigil` and `vigil-model` executables, each in its own file under
 * tools/. Each takes argc/argv starting at the subcommand name (argv[0] is "plan", "golden", ...),
 * prints to stdout/stderr and returns a process exit status (0 success, 1 failure, 2 usage error).
 */
#ifndef VG_TOOLS_CMDS_H
#define VG_TOOLS_CMDS_H

/* vigil plan (tools/plan/cmd_plan.c). */
int vg_cmd_plan(int argc, char **argv);

/* vigil-model subcommands (tools/model/). */
int vg_cmd_tokenize(int argc, char **argv); /* cmd_tokenize.c */
int vg_cmd_random(int argc, char **argv);   /* cmd_random.c */
int vg_cmd_quantize(int argc, char **argv); /* cmd_quantize.c */
int vg_cmd_golden(int argc, char **argv);   /* cmd_golden.c */
int vg_cmd_bench(int argc, char **argv);    /* cmd_bench.c */

#endif
