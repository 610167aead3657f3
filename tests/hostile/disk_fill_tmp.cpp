// expect: OUTPUT_LIMIT RUNTIME_ERROR OK
#include <cstdio>
int main() {
  for (int n = 0;; n++) {
    char name[64]; snprintf(name, sizeof name, "/tmp/fill%d", n);
    FILE* f = fopen(name, "w"); if (!f) return 0;
    static char block[1 << 20];
    for (int i = 0; i < 64; i++) if (fwrite(block, 1, sizeof block, f) != sizeof block) return 0;
    fclose(f);
  }
}
