// expect: COMPILE_ERROR
// forbid: CANARY
#include "/tmp/crucible_host_canary.txt"
int main() { return 0; }
