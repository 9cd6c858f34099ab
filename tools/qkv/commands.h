/* One entry point per subcommand, each in its own file; argv[0] is the
 * subcommand's name. Each returns the process exit code (cli.h). */
#ifndef QKV_COMMANDS_H
#define QKV_COMMANDS_H

int cmd_run(int argc, char **argv);
int cmd_grad(int argc, char **argv);
int cmd_explain(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_heatmap(int argc, char **argv);
int cmd_mha(int argc, char **argv);

#endif
