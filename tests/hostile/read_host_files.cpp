// expect: OK
// forbid: CANARY
#include <cstdio>
int main() {
  const char* paths[] = {"/tmp/crucible_host_canary.txt", "/etc/shadow", "/root/.bash_history",
                         "/var/cache/crucible/canary", "/proc/1/environ", "/proc/1/cmdline", "/etc/hostname"};
  for (const char* p : paths) {
    FILE* f = fopen(p, "r"); if (!f) continue;
    char buf[4096]; size_t n = fread(buf, 1, sizeof buf - 1, f); buf[n] = 0; fclose(f);
    printf("%s: %s\n", p, buf);
  }
  return 0;
}
