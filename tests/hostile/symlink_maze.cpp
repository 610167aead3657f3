// expect: OK
// Links out of scratch and loops inside it: cleanup must remove the links, never follow them.
#include <sys/stat.h>
#include <unistd.h>
int main() {
  symlink("/", "/work/root"); symlink("/usr/bin", "/tmp/bin"); symlink("/work", "/work/self");
  symlink("loop2", "/work/loop1"); symlink("loop1", "/work/loop2");
  mkdir("/work/d", 0755); symlink("..", "/work/d/up"); symlink("/opt/crucible/runner.py", "/work/d/runner");
  mkfifo("/work/fifo", 0600);
  chmod("/work/d", 0);
  return 0;
}
