// expect: OK
#include <cstdio>
#include <fcntl.h>
int main() {
  int n = 0; while (open("/dev/null", O_RDONLY) >= 0) n++;
  printf("opened %d\n", n); return n > 4096;
}
