// expect: TIME_LIMIT
#include <csignal>
int main() { raise(SIGSTOP); return 0; }
