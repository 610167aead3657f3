// expect: OK
// forbid: PRIV
#include <cstdio>
#include <sched.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/reboot.h>
#include <unistd.h>
int main() {
  if (mount("tmpfs", "/work", "tmpfs", 0, nullptr) == 0) puts("PRIV mount");
  if (unshare(CLONE_NEWUSER) == 0) puts("PRIV unshare-user");
  if (unshare(CLONE_NEWNS) == 0) puts("PRIV unshare-ns");
  if (chroot("/") == 0) puts("PRIV chroot");
  if (sethostname("pwned", 5) == 0) puts("PRIV sethostname");
  if (setuid(0) == 0) puts("PRIV setuid");
  if (ptrace(PTRACE_ATTACH, 1, nullptr, nullptr) == 0) puts("PRIV ptrace-runner");
  if (reboot(RB_POWER_OFF) == 0) puts("PRIV reboot");
  return 0;
}
