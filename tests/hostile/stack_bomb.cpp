// expect: MEMORY_LIMIT RUNTIME_ERROR
int f(volatile int x) { volatile char buf[4096]; buf[0] = x; return f(x + 1) + buf[0]; }
int main() { return f(0); }
