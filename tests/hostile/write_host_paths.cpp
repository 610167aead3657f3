// expect: OK
// forbid: WROTE
#include <cstdio>
#include <initializer_list>
int main() {
  for (const char* p : {"/tmp/../etc/crucible_pwned", "/usr/crucible_pwned", "/etc/crucible_pwned", "/opt/crucible/pch/pwned",
                        "/opt/crucible/runner.py", "/var/tmp/crucible_pwned", "/root/crucible_pwned"}) {
    FILE* f = fopen(p, "a"); if (f) { printf("WROTE %s\n", p); fclose(f); }
  }
  return 0;
}
