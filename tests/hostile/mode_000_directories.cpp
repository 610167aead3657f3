// expect: OK
// Cleanup must remove what a program leaves behind even when it cannot be listed or entered.
#include <cstdio>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
int main() {
  const char* tops[] = {"/work/d", "/tmp/d", "/dev/shm/d"};
  for (const char* top : tops) {
    mkdir(top, 0755);
    char inner[64]; snprintf(inner, sizeof inner, "%s/inner", top);
    mkdir(inner, 0755);
    char file[80]; snprintf(file, sizeof file, "%s/f", inner);
    close(open(file, O_CREAT | O_WRONLY, 0));
    chmod(inner, 0); chmod(top, 0);
  }
  mkdir("/work/empty", 0);
  return 0;
}
