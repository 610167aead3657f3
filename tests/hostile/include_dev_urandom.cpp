// expect: COMPILE_ERROR
#include "/dev/urandom"
int main() { return 0; }
