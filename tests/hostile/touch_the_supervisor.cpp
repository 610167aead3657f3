// expect: OK
// Every way a process can lower another's limits or priority, tried against PID 1 (the runner) and the
// parent. Prints one result per attempt: "ok" would be a hole (tests/integration/sandbox/test_red_team.py).
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>
static void report(const char* what, int rc) { printf("%s %s\n", what, rc == 0 ? "ok" : strerror(errno)); }
int main() {
  pid_t targets[] = {1, getppid()};
  for (pid_t t : targets) {
    struct rlimit small = {1 << 16, 1 << 16};
    report("prlimit_stack", prlimit(t, RLIMIT_STACK, &small, nullptr));
    struct rlimit cpu = {1, 1};
    report("prlimit_cpu", prlimit(t, RLIMIT_CPU, &cpu, nullptr));
    struct rlimit nofile = {4, 4};
    report("prlimit_nofile", prlimit(t, RLIMIT_NOFILE, &nofile, nullptr));
    report("setpriority", setpriority(PRIO_PROCESS, t, 19));
    struct sched_param p = {0};
    report("sched_idle", sched_setscheduler(t, SCHED_IDLE, &p));
    cpu_set_t one; CPU_ZERO(&one); CPU_SET(0, &one);
    report("affinity", sched_setaffinity(t, sizeof one, &one));
  }
  return 0;
}
