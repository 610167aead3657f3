// expect: OK
// forbid: CONNECTED
#include <arpa/inet.h>
#include <cstdio>
#include <sys/socket.h>
#include <unistd.h>
int main() {
  int port = 0; if (scanf("%d", &port) != 1) port = 2375;
  const int ports[] = {port, 2375, 2376, 22, 80, 8265, 6379};
  for (int p : ports) {
    int s = socket(AF_INET, SOCK_STREAM, 0); sockaddr_in a{}; a.sin_family = AF_INET; a.sin_port = htons(p);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(s, (sockaddr*)&a, sizeof a) == 0) printf("CONNECTED %d\n", p);
    close(s);
  }
  return 0;
}
