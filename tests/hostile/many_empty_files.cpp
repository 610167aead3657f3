// expect: OK RUNTIME_ERROR TIME_LIMIT
// Empty files across nested directories until the file system or the time limit says stop.
#include <cstdio>
#include <sys/stat.h>
int main() {
  for (int d = 0; d < 200; d++) {
    char dir[64]; snprintf(dir, sizeof dir, "/work/d%d", d);
    if (mkdir(dir, 0755) != 0) return 0;
    for (int n = 0; n < 5000; n++) {
      char name[96]; snprintf(name, sizeof name, "%s/%d", dir, n);
      FILE* f = fopen(name, "w"); if (!f) return 0; fclose(f);
    }
  }
}
