// expect: COMPILE_ERROR
#include __FILE__
int main() { return 0; }
