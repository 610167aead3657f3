// expect: OK
// 3,000 nested directories (deeper than a recursive remover's stack, longer than PATH_MAX), the deepest
// one mode 000.
#include <sys/stat.h>
#include <unistd.h>
int main() {
  const char* name = "a_long_directory_name_to_pass_path_max";
  for (int i = 0; i < 3000; i++) {
    if (mkdir(name, 0755) != 0 || chdir(name) != 0) return 0;
  }
  mkdir("last", 0);
  return 0;
}
