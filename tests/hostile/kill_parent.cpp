// expect: OK
#include <csignal>
#include <unistd.h>
int main() {
  kill(getppid(), SIGKILL); kill(1, SIGKILL); kill(1, SIGTERM); kill(1, SIGINT); kill(1, SIGSEGV);
  kill(1, SIGSTOP); kill(1, SIGUSR1);
  return 0;
}
