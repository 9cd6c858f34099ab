/* The qkv command-line tool: dispatches to one subcommand per file. */
#include "cli.h"
#include "commands.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static const char usage[] =
    "usage: qkv COMMAND [options]\n"
    "\n"
    "qkv computes the attention of transformers: softmax(Q K^T / sqrt(d_k)) V.\n"
    "\n"
    "commands:\n"
    "  run        attention on .npy files (qkv run --help)\n"
    "  grad       its gradients: dQ, dK, dV from dO (qkv grad --help)\n"
    "  mha        a multi-head attention layer from .safetensors (qkv mha --help)\n"
    "  explain    attention step by step, on the worked example or your own words\n"
    "  bench      speed against the machine's ceiling (qkv bench --help)\n"
    "  heatmap    draw attention weights as SVG, PNG or HTML (qkv heatmap --help)\n"
    "\n"
    "  -h, --help      show this help\n"
    "  --version       show the version of qkv and of libqkv\n";

static int dispatch(int argc, char **argv)
{
    const char *cmd = argv[1];
    int lone = argc == 2; /* top-level flags take nothing after them */
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        if (!lone) {
            cli_error(NULL, "%s takes no arguments (for a command's help: qkv COMMAND --help)",
                      cmd);
            return CLI_USAGE;
        }
        fputs(usage, stdout);
        return CLI_OK;
    }
    if (strcmp(cmd, "--version") == 0) {
        if (!lone) {
            cli_error(NULL, "--version takes no arguments");
            return CLI_USAGE;
        }
        printf("qkv %d.%d.%d (libqkv %s)\n", QKV_VERSION_MAJOR, QKV_VERSION_MINOR,
               QKV_VERSION_PATCH, qkv_version_string());
        return CLI_OK;
    }
    if (strcmp(cmd, "run") == 0) return cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "grad") == 0) return cmd_grad(argc - 1, argv + 1);
    if (strcmp(cmd, "mha") == 0) return cmd_mha(argc - 1, argv + 1);
    if (strcmp(cmd, "explain") == 0) return cmd_explain(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0) return cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "heatmap") == 0) return cmd_heatmap(argc - 1, argv + 1);
    cli_error(NULL, "unknown command '%s' (see 'qkv --help')", cmd);
    return CLI_USAGE;
}

/* What a command printed is its result: when standard output could not
 * take all of it (a full disk, /dev/full, a closed pipe with SIGPIPE
 * ignored), a successful command becomes an error. A failed one has said
 * why already, in its one line. */
static int close_stdout(const char *cmd, int rc)
{
    if (rc != CLI_OK) {
        fclose(stdout);
        return rc;
    }
    return cli_stdout_ok(cmd, 1) ? rc : CLI_ERROR;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return CLI_USAGE;
    }
    /* Over a file size limit (ulimit -f), a write fails with EFBIG and
     * becomes the usual one-line error, instead of SIGXFSZ killing qkv
     * silently with its temporaries left behind. */
    signal(SIGXFSZ, SIG_IGN);
    const char *cmd = argv[1][0] == '-' || strcmp(argv[1], "help") == 0 ? NULL : argv[1];
    cli_catch_bus_errors(cmd);
    int rc = dispatch(argc, argv);
    return close_stdout(cmd, rc);
}
