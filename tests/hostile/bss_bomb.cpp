// expect: MEMORY_LIMIT RUNTIME_ERROR
static char big[1ULL << 30];
int main() { for (unsigned long i = 0; i < sizeof big; i += 4096) big[i] = 1; return big[4096]; }
