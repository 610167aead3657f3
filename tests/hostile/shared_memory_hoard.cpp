// expect: OK RUNTIME_ERROR MEMORY_LIMIT
// Memory RLIMIT_AS does not count: SysV segments written then detached, memfd pages, POSIX shm files.
#include <cstring>
#include <fcntl.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>
int main() {
  for (int i = 0; i < 256; i++) {  // up to 16 GB if nothing stops it
    int id = shmget(IPC_PRIVATE, 64 << 20, IPC_CREAT | 0600);
    if (id < 0) break;
    void* p = shmat(id, nullptr, 0);
    if (p == (void*)-1) break;
    memset(p, 1, 64 << 20);
    shmdt(p);
  }
  static char block[1 << 20];
  memset(block, 1, sizeof block);
  for (int i = 0; i < 256; i++) {
    int fd = memfd_create("hoard", 0);
    if (fd < 0) break;
    for (int mb = 0; mb < 64; mb++) if (write(fd, block, sizeof block) != (ssize_t)sizeof block) break;
  }
  return 0;
}
