// expect: OK
#include <csignal>
int main() { kill(-1, SIGKILL); return 0; }
