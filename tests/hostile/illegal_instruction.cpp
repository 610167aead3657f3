// expect: RUNTIME_ERROR
int main() { __builtin_trap(); }
