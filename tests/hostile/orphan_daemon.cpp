// expect: OK
#include <unistd.h>
#include <cstdio>
int main() {
  if (fork() == 0) { setsid(); if (fork() == 0) { for (;;) { FILE* f = fopen("/tmp/daemon_alive", "w"); if (f) fclose(f); sleep(1); } } _exit(0); }
  return 0;
}
