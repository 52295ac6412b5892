/*
 * cmds.h: the subcommands of the `vigil` and `vigil-model` executables, each in its own file under
 * tools/. Each takes argc/argv starting at the subcommand name, prints to stdout/stderr and returns
 * a process exit status (0 success, 1 failure, 2 usage error).
 */
#ifndef VG_TOOLS_CMDS_H
#define VG_TOOLS_CMDS_H

/* vigil plan (tools/plan/). */
int vg_cmd_plan(int argc, char **argv);

#endif
