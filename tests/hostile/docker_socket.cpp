// expect: OK
// forbid: DOCKER
#include <cstdio>
#include <cstring>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
int main() {
  const char* paths[] = {"/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock"};
  for (const char* p : paths) {
    int s = socket(AF_UNIX, SOCK_STREAM, 0); sockaddr_un a{}; a.sun_family = AF_UNIX;
    strncpy(a.sun_path, p, sizeof a.sun_path - 1);
    if (connect(s, (sockaddr*)&a, sizeof a) == 0) printf("DOCKER %s\n", p);
    close(s);
  }
  return 0;
}
