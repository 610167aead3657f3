// A writer and a reader job try every channel that could outlive a job or cross between concurrent jobs.
// stdin: "write TOKEN" or "read". The reader prints whatever it found.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <linux/keyctl.h>
#include <mqueue.h>
#include <string>
#include <sys/file.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <unistd.h>
int main() {
  char mode[16] = {0}, token[64] = {0};
  if (scanf("%15s %63s", mode, token) < 1) return 1;
  bool write_ = !strcmp(mode, "write");
  // 1. SysV shared memory under a fixed key
  int id = shmget(0x43525543, 4096, write_ ? (IPC_CREAT | 0666) : 0);
  if (id >= 0) { char* p = (char*)shmat(id, nullptr, 0); if (p != (char*)-1) { if (write_) strcpy(p, token); else printf("shm:%s\n", p); } }
  // 2. POSIX message queue
  mqd_t q = mq_open("/crucible", write_ ? (O_CREAT | O_RDWR | O_NONBLOCK) : (O_RDONLY | O_NONBLOCK), 0666, nullptr);
  if (q != (mqd_t)-1) { char buf[16384]; if (write_) mq_send(q, token, strlen(token), 0); else if (mq_receive(q, buf, sizeof buf, nullptr) > 0) printf("mq:%s\n", buf); }
  // 3. the user keyring
  if (write_) syscall(SYS_add_key, "user", "crucible", token, strlen(token), KEY_SPEC_USER_KEYRING);
  else { long k = syscall(SYS_request_key, "user", "crucible", nullptr, 0);
         char buf[128] = {0}; if (k >= 0 && syscall(SYS_keyctl, KEYCTL_READ, k, buf, sizeof buf - 1) > 0) printf("key:%s\n", buf); }
  // 3b. a queue created through the mqueue file system (Docker mounts /dev/mqueue), its name carrying the token
  if (write_) { std::string q = std::string("/dev/mqueue/crucible-") + token; close(open(q.c_str(), O_CREAT | O_RDWR, 0666)); }
  else if (DIR* d = opendir("/dev/mqueue")) { while (dirent* e = readdir(d)) if (e->d_name[0] != '.') printf("mqfs:%s\n", e->d_name); closedir(d); }
  // 4. files in every scratch directory
  const char* files[] = {"/work/chan", "/tmp/chan", "/dev/shm/chan"};
  for (const char* f : files) {
    if (write_) { FILE* o = fopen(f, "w"); if (o) { fputs(token, o); fclose(o); } }
    else { FILE* i = fopen(f, "r"); char buf[128] = {0}; if (i && fgets(buf, sizeof buf, i)) printf("file:%s\n", buf); }
  }
  // 5. a lock on a shared read-only file: the writer holds it for 3 s, the reader polls for it
  int fd = open("/usr/bin/g++", O_RDONLY);
  if (write_) { if (flock(fd, LOCK_EX | LOCK_NB) == 0) sleep(3); }
  else { for (int i = 0; i < 20; i++) { if (flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) { printf("lock:held\n"); break; } usleep(100000); } }
  printf("done\n");
  return 0;
}
