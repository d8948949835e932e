#include "interop.h"

#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "config.h"
#include "model.h"
#include "safetensors.h"

extern char **environ;

#define CONVERTER "scripts/pth_to_safetensors.py"

static int has_converter(const char *folder) {
    char path[PF_PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/" CONVERTER, folder);
    return pf_file_exists(path);
}

static const char *python_command(void) {
    const char *p = getenv("PF_PYTHON");
    if (p && p[0]) return p;
    return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
}

// Runs argv with stderr captured into err (its last line kept); returns the exit status or -1.
static int run_captured(char *const argv[], char *err, size_t err_size) {
    int pipe_fds[2];
    if (pipe(pipe_fds) != 0) return pf_fail("pipe: %s", strerror(errno));
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
    posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
    pid_t pid;
    int spawn_rc = posix_spawnp(&pid, argv[0], &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(pipe_fds[1]);
    if (spawn_rc != 0) {
        close(pipe_fds[0]);
        return pf_fail("cannot run %s: %s", argv[0], strerror(spawn_rc));
    }
    size_t used = 0;
    char chunk[1024];
    ssize_t got;
    err[0] = '\0';
    while ((got = read(pipe_fds[0], chunk, sizeof(chunk))) > 0) {
        for (ssize_t i = 0; i < got; i++) {
            if (used + 1 < err_size) err[used++] = chunk[i];
        }
        err[used] = '\0';
    }
    close(pipe_fds[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return pf_fail("waiting for %s: %s", argv[0], strerror(errno));
    // the last non-empty line is the converter's reason
    while (used > 0 && (err[used - 1] == '\n' || err[used - 1] == '\r')) err[--used] = '\0';
    char *last = strrchr(err, '\n');
    if (last) memmove(err, last + 1, strlen(last + 1) + 1);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int interop_import_pth(const char *in_path, const char *out_path, int n_heads, size_t *num_parameters,
                       int *n_layers) {
    char home[PF_PATH_MAX], script[PF_PATH_MAX + 64], heads[16], err[2048];
    if (!pf_find_home(has_converter, home, sizeof(home)))
        return pf_fail("cannot find %s beside the pathformer binary (or under PATHFORMER_HOME)", CONVERTER);
    snprintf(script, sizeof(script), "%s/" CONVERTER, home);
    snprintf(heads, sizeof(heads), "%d", n_heads);
    char *argv[] = {(char *)python_command(), script, (char *)in_path, (char *)out_path,
                    n_heads > 0 ? "--n-heads" : NULL, heads, NULL};
    int status = run_captured(argv, err, sizeof(err));
    if (status < 0) return -1;
    if (status != 0) {
        const char *reason = strncmp(err, "pth_to_safetensors: ", 20) == 0 ? err + 20 : err;
        return pf_fail("%s", reason[0] ? reason : "the converter failed");
    }
    StFile file;
    if (model_open_checkpoint(&file, out_path) != 0) return -1;
    ModelConfig cfg = model_config_default();
    int rc = model_config_from_file(&cfg, &file);
    if (rc == 0) {
        Model model;
        model_create(&model, &cfg, 1, 0);
        rc = model_load_params(&model, &file);
        *num_parameters = model.num_parameters;
        *n_layers = cfg.n_layers;
        model_free(&model);
    }
    st_free(&file);
    if (rc != 0) return pf_fail("%s (converted from %s): %s", out_path, in_path, pf_last_error());
    return 0;
}
