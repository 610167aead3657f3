// expect: TIME_LIMIT
// Five processes, each under its own RLIMIT_CPU, that together use far more CPU than the stage allows, and
// exit 0: two children waited for, two orphans (never waited for by anyone in the job), and the parent.
#include <ctime>
#include <sys/wait.h>
#include <unistd.h>
static void burn(double seconds) {
  clock_t start = clock(); volatile long x = 0;
  while ((double)(clock() - start) / CLOCKS_PER_SEC < seconds) x++;
}
int main() {
  for (int i = 0; i < 2; i++) if (fork() == 0) { burn(0.45); _exit(0); }
  for (int i = 0; i < 2; i++) if (fork() == 0) { if (fork() == 0) { burn(0.45); _exit(0); } _exit(0); }
  burn(0.45);
  while (wait(nullptr) > 0) {}
  usleep(600000);  // the orphans finish their work before we exit
  return 0;
}
