// expect: OK
// forbid: ESCAPED
// Only attempts a connection when the jail has no interface but loopback, so no packet can leave even
// if the jail were broken: then it reports the interface instead.
#include <arpa/inet.h>
#include <cstdio>
#include <cstring>
#include <ifaddrs.h>
#include <sys/socket.h>
#include <unistd.h>
int main() {
  ifaddrs* ifs = nullptr; getifaddrs(&ifs);
  for (ifaddrs* i = ifs; i; i = i->ifa_next)
    if (strcmp(i->ifa_name, "lo") != 0) { printf("ESCAPED interface %s\n", i->ifa_name); return 0; }
  const char* targets[] = {"10.0.0.1", "172.16.0.1", "192.168.0.1", "169.254.169.254", "8.8.8.8"};
  for (const char* t : targets) {
    int s = socket(AF_INET, SOCK_STREAM, 0); sockaddr_in a{}; a.sin_family = AF_INET; a.sin_port = htons(80);
    inet_pton(AF_INET, t, &a.sin_addr);
    if (connect(s, (sockaddr*)&a, sizeof a) == 0) printf("ESCAPED %s\n", t);
    close(s);
  }
  return 0;
}
