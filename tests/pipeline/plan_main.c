/*
 * plan_main.c: a stand-alone `vigil plan` for the pipeline tests (vigil-plan-test plan ...), so the
 * plan command is exercised through its real entry point vg_cmd_plan() even in a tree where the
 * client's main() is not built.
 */
#include "cmds.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "plan")) {
        fprintf(stderr, "usage: %s plan [options] (see plan --help)\n", argv[0]);
        return 2;
    }
    return vg_cmd_plan(argc - 1, argv + 1);
}
