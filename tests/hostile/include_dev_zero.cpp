// expect: COMPILE_ERROR
#include "/dev/zero"
int main() { return 0; }
