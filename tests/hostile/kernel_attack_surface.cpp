// expect: OK
// Kernel interfaces no judged program needs. Prints one result per call: "ok" would be a hole
// (tests/integration/sandbox/test_red_team.py).
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <linux/keyctl.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
static void report(const char* what, long rc) { printf("%s %s\n", what, rc >= 0 ? "ok" : strerror(errno)); }
static char stack[65536];
static int child(void*) { return 0; }
int main() {
  report("add_key", syscall(SYS_add_key, "user", "crucible", "x", 1, KEY_SPEC_SESSION_KEYRING));
  report("keyctl_join", syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, 0));
  report("request_key", syscall(SYS_request_key, "user", "crucible", nullptr, KEY_SPEC_USER_KEYRING));
  report("af_vsock", socket(40, SOCK_STREAM, 0));
  report("af_alg", socket(38, SOCK_SEQPACKET, 0));
  report("io_uring_setup", syscall(SYS_io_uring_setup, 8, stack));
  report("userfaultfd", syscall(SYS_userfaultfd, 0));
  report("bpf", syscall(SYS_bpf, 0, stack, 64));
  report("perf_event_open", syscall(SYS_perf_event_open, stack, 0, -1, -1, 0));
  report("unshare_user", unshare(CLONE_NEWUSER));
  report("unshare_mount", unshare(CLONE_NEWNS));
  long pid = clone(child, stack + sizeof stack, CLONE_NEWUSER | SIGCHLD, nullptr);
  report("clone_newuser", pid);
  report("memfd_create", memfd_create("x", 0));
  report("shmget", shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600));
  report("mq_open", syscall(SYS_mq_open, "crucible", O_CREAT | O_RDWR, 0600, nullptr));
  int fd = open("/usr/bin/g++", O_RDONLY);
  report("flock", flock(fd, LOCK_EX | LOCK_NB));
  struct flock lk = {}; lk.l_type = F_RDLCK; lk.l_whence = SEEK_SET;
  report("fcntl_setlk", fcntl(fd, F_SETLK, &lk));
  report("ptrace_attach_parent", syscall(SYS_ptrace, 16 /* PTRACE_ATTACH */, getppid(), 0, 0));
  return 0;
}
