/*
 * reaper COMMAND [ARG...]: run COMMAND and wait for it and for every process it leaves behind.
 * Used by bench/flash.sh between GNU time and each timed command, and by bench/qemu-remote.sh
 * to run libvirtd (built with cc on first use: build_reaper in bench/lib.sh).
 *
 * As a child subreaper (PR_SET_CHILD_SUBREAPER), orphans are re-parented to this process, not
 * to init, so their CPU time and peak RSS reach GNU time's rusage and the run ends when they
 * do. bmaptool sometimes exits without reaping its `xz -d` (seen on a block device): without
 * this, that xz's CPU seconds counted as "other processes", and the run was repeated as
 * disturbed. Exits with COMMAND's status (128 + signal when it was killed).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: reaper COMMAND [ARG...]\n");
    return 2;
  }
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
    perror("reaper: prctl");
    return 70;
  }
  pid_t child = fork();
  if (child < 0) {
    perror("reaper: fork");
    return 70;
  }
  if (child == 0) {
    execvp(argv[1], argv + 1);
    fprintf(stderr, "reaper: %s: ", argv[1]);
    perror("");
    _exit(127);
  }
  /* Ctrl-C / cleanup signal the whole process group: the command handles it; this one keeps
     reaping until it is gone. (Set after the fork: an ignored signal would be inherited.) */
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  int code = 0;
  for (;;) {
    int st;
    pid_t p = wait(&st);
    if (p < 0) {
      if (errno == EINTR) continue;
      break; /* ECHILD: everything has been reaped */
    }
    if (p == child) code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  return code;
}
