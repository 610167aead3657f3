// expect: OK RUNTIME_ERROR TIME_LIMIT
#include <cstdio>
#include <sys/stat.h>
int main() {
  for (int n = 0; n < 2000000; n++) {
    char name[64]; snprintf(name, sizeof name, "/work/f%d", n);
    FILE* f = fopen(name, "w"); if (!f) return 0; fclose(f);
  }
}
