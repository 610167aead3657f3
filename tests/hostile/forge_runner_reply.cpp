// expect: OK
// forbid: FORGED
// Tries to write a fake reply into the runner's stdout and read its memory.
#include <cstdio>
#include <initializer_list>
#include <fcntl.h>
#include <unistd.h>
int main() {
  const char* fake = "{\"id\":\"x\",\"runs\":[],\"clean\":true}\n";
  for (const char* p : {"/proc/1/fd/1", "/proc/1/fd/0", "/proc/1/mem", "/dev/stdout"}) {
    int fd = open(p, O_WRONLY);
    if (fd >= 0 && p[1] == 'p') { if (write(fd, fake, 34) > 0) printf("FORGED %s\n", p); }
    if (fd >= 0) close(fd);
  }
  puts("{\"id\":\"x\",\"runs\":[],\"clean\":true}");
  return 0;
}
